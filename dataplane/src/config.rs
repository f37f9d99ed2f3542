//! Process configuration: RIG's environment variables, parsed in one place.
//!
//! Every default is defined here with the reason for it. Unknown or malformed values stop the
//! process at start-up with a message naming the variable (a misconfigured gateway must not serve).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use thiserror::Error;

/// Inbound port: connections, subscriptions, event publishing, proxied APIs (RIG's default 4000).
pub const ENV_INBOUND_PORT: &str = "INBOUND_PORT";
/// Internal API port: `/v3/...`, `/health`, `/metrics` (RIG's default 4010).
pub const ENV_API_HTTP_PORT: &str = "API_HTTP_PORT";
/// Address both listeners bind to. Default `0.0.0.0` (a pod must be reachable); tests use loopback.
pub const ENV_BIND_ADDRESS: &str = "RIG_BIND_ADDRESS";
/// Value of `access-control-allow-origin` (RIG's `CORS`, default `*`).
pub const ENV_CORS: &str = "CORS";

const DEFAULT_INBOUND_PORT: u16 = 4000;
const DEFAULT_API_HTTP_PORT: u16 = 4010;
const DEFAULT_CORS: &str = "*";

/// A configuration value that cannot be used.
#[derive(Debug, Error)]
pub enum Error {
    /// The variable is set but does not parse.
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The data plane's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the inbound listener binds.
    pub inbound: SocketAddr,
    /// Where the internal API listener binds.
    pub internal: SocketAddr,
    /// `access-control-allow-origin` value.
    pub cors: String,
}

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Read the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bind: IpAddr = parse(&lookup, ENV_BIND_ADDRESS, "an IP address")?
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let inbound_port =
            parse(&lookup, ENV_INBOUND_PORT, "a port number")?.unwrap_or(DEFAULT_INBOUND_PORT);
        let internal_port =
            parse(&lookup, ENV_API_HTTP_PORT, "a port number")?.unwrap_or(DEFAULT_API_HTTP_PORT);
        Ok(Self {
            inbound: SocketAddr::new(bind, inbound_port),
            internal: SocketAddr::new(bind, internal_port),
            cors: lookup(ENV_CORS).unwrap_or_else(|| DEFAULT_CORS.to_owned()),
        })
    }
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    reason: &'static str,
) -> Result<Option<T>> {
    match lookup(var) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Error::Invalid { var, value, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_rigs() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.inbound.port(), 4000);
        assert_eq!(c.internal.port(), 4010);
        assert_eq!(c.cors, "*");
    }

    #[test]
    fn a_bad_port_names_the_variable() {
        let err = config(&[("INBOUND_PORT", "http")]).expect_err("invalid");
        assert!(err.to_string().contains("INBOUND_PORT"), "{err}");
    }

    #[test]
    fn bind_address_and_ports_are_read() {
        let c = config(&[
            ("RIG_BIND_ADDRESS", "127.0.0.1"),
            ("INBOUND_PORT", "5000"),
            ("API_HTTP_PORT", "5010"),
        ])
        .expect("valid");
        assert_eq!(c.inbound, "127.0.0.1:5000".parse().expect("addr"));
        assert_eq!(c.internal, "127.0.0.1:5010".parse().expect("addr"));
    }
}
