//! LDAP v3 front end: presents the directory snapshot as Active Directory to PBXs, phones and CTI clients.

pub mod ber;
pub mod bind;
pub mod encode;
pub mod filter;
pub mod paging;
pub mod proto;
pub mod rootdse;
pub mod schema;
pub mod search;
