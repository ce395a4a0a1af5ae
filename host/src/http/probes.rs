//! The probes' own threads: `/workspace/health` and `/metrics` answer
//! while git work fills tokio's blocking pool.

use super::errors::ApiError;
use super::reject;
use crate::error::Result;
use std::sync::Arc;
use warp::Rejection;

/// Run a manager call on the probe pool, not tokio's blocking pool: for
/// the probes, which must answer while git work fills that pool.
pub(super) async fn isolated<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Rejection> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    probe_pool().run(Box::new(move || {
        let _ = tx.send(f());
    }));
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(reject(ApiError::Manager(e))),
        Err(_) => Err(reject(ApiError::Internal(
            "the probe pool dropped the request".into(),
        ))),
    }
}

/// Two threads of the process's own that only ever run probe work
/// (health and metrics figures). Their work is short (a listing and a
/// policy call at most), and usually skipped: a fresh snapshot is
/// answered without them.
struct ProbePool {
    jobs: parking_lot::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl ProbePool {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        // The workers live as long as the process, so sending cannot fail.
        let _ = self.jobs.lock().send(job);
    }
}

fn probe_pool() -> &'static ProbePool {
    static POOL: std::sync::OnceLock<ProbePool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..2 {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("fixsec-probe-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                })
                .expect("starting the probe threads");
        }
        ProbePool {
            jobs: parking_lot::Mutex::new(tx),
        }
    })
}
