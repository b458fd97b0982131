//! entradir: a Microsoft Entra ID tenant presented as an on-premises Active Directory over LDAP and CardDAV.
//!
//! Data flows one way: [`graph`] (Microsoft Graph delta sync) → [`directory`] (immutable snapshots) → the
//! protocol front ends, which only read snapshots. [`sync`] drives rounds; [`server`] wires it all together.

pub mod accounts;
pub mod admin;
pub mod carddav;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod directory;
pub mod expiry;
pub mod export;
pub mod frontends;
pub mod graph;
pub mod ldap;
mod memory;
pub mod metrics;
pub mod net;
pub mod panics;
pub mod server;
pub mod sync;
pub mod time;
pub mod tls;
