//! The host's side effects, offered to the policy as WIT imports: sizing and
//! listing ([`fs`]), retrying deletion ([`removal`]) and git ([`git`]).

pub mod fs;
pub mod git;
pub mod removal;
