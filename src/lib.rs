//! entradir: a Microsoft Entra ID tenant presented as an on-premises Active Directory over LDAP and CardDAV.

pub mod carddav;
pub mod directory;
pub mod graph;
