//! The host's side effects, offered to the policy as WIT imports: sizing and
//! listing ([`fs`]), retrying deletion ([`removal`]) and git ([`git`]);
//! and, for stock git run in a leased workspace, a credential served from
//! memory ([`credential_cache`]); for a second job on a leased workspace,
//! copies that share blocks ([`reflink`]).

pub mod credential_cache;
pub mod fs;
pub mod git;
pub mod reflink;
pub mod removal;
