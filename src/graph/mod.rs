//! Microsoft Graph: authentication, HTTP with retries and throttling, delta sync and photos.

pub mod sim;
