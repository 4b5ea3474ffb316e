//! Server configuration: a TOML file, overridden key by key from `NEURITE_*`
//! environment variables, with defaults that run a closed, rate-limited
//! server for `localhost` on 127.0.0.1:8008.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::limits;

/// Who may create an account through `POST /register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Nobody: accounts come from `neurite create-account` (the default).
    Closed,
    /// Whoever holds a registration token (`m.login.registration_token`).
    Token,
    /// Anybody, with `m.login.dummy` and no verification.
    Open,
}

/// Whether rate limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The whole configuration of a Neurite server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server name: the part after `:` in user IDs. Cannot change later.
    pub server_name: String,
    /// Address and port the HTTP listener binds.
    pub listen: SocketAddr,
    /// Folder holding the database and the signing key; created on first start.
    pub data_dir: PathBuf,
    /// Base URL clients use, served in `/.well-known/matrix/client`.
    /// Empty means `http://<listen>/` for `localhost`, else `https://<server_name>/`.
    pub public_baseurl: String,
    /// Who may register: `closed`, `token` or `open`.
    pub registration: Registration,
    /// Rate limits on the endpoints the spec marks rate-limited (login,
    /// registration, and most authenticated ones): `on` or `off`.
    pub rate_limits: Switch,
    /// Sustained requests per second allowed per user (authenticated requests)
    /// or per client address (the others) when rate limits are on.
    pub rate_limit_per_second: u32,
    /// Burst of requests allowed above the sustained rate.
    pub rate_limit_burst: u32,
    /// Largest request body accepted, in bytes; larger gets 413 `M_TOO_LARGE`.
    pub max_request_bytes: usize,
    /// Lifetime of access tokens issued with a refresh token, in milliseconds.
    /// Tokens issued to clients without refresh support do not expire.
    pub access_token_lifetime_ms: u64,
    /// Shortest password accepted, in characters.
    pub password_min_length: usize,
    /// Localparts nobody may register (`M_EXCLUSIVE`), besides those starting with `_`.
    pub reserved_usernames: Vec<String>,
    /// Log line format: `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `neurite=debug,info`.
    pub log_level: String,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("./neurite-data"),
            public_baseurl: String::new(),
            registration: Registration::Closed,
            rate_limits: Switch::On,
            rate_limit_per_second: 10,
            rate_limit_burst: 50,
            max_request_bytes: limits::REQUEST_BODY_BYTES_MAX,
            access_token_lifetime_ms: 5 * 60 * 1000,
            password_min_length: 8,
            reserved_usernames: Vec::new(),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            metrics: true,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable did not parse into a configuration.
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// The values parsed but are not usable.
    #[error("{0}")]
    Invalid(String),
}

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "NEURITE_";

impl Config {
    /// Loads the defaults, then `file` if given, then `NEURITE_<KEY>` variables.
    ///
    /// # Errors
    /// A file that does not exist or parse, an unknown key, a value of the
    /// wrong type, or a value that fails [`Config::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid(format!("configuration file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only NEURITE_<KEY> for a known key overrides it: other NEURITE_*
        // variables (NEURITE_CONFIG naming the file, test settings) are not keys.
        let keys: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let env =
            Env::prefixed(ENV_PREFIX).filter(move |k| keys.iter().any(|key| k.as_str().eq_ignore_ascii_case(key)));
        figment = figment.merge(env);
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that parse but cannot work.
    ///
    /// # Errors
    /// A server name that is not a valid Matrix server name, or a zero limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return Err(ConfigError::Invalid(format!(
                "server_name {:?} is not a valid Matrix server name",
                self.server_name
            )));
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Invalid("max_request_bytes must be above 0".into()));
        }
        if self.rate_limits == Switch::On && (self.rate_limit_per_second == 0 || self.rate_limit_burst == 0) {
            return Err(ConfigError::Invalid(
                "rate_limit_per_second and rate_limit_burst must be above 0 (or set rate_limits = \"off\")".into(),
            ));
        }
        let url = &self.public_baseurl;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid("public_baseurl must start with http:// or https://".into()));
        }
        Ok(())
    }

    /// The server name as a ruma type (validated by [`Config::validate`]).
    pub fn server_name(&self) -> ruma::OwnedServerName {
        ruma::ServerName::parse(&self.server_name).expect("validated when the config was loaded")
    }

    /// The base URL clients should use (see `public_baseurl`).
    pub fn client_base_url(&self) -> String {
        if !self.public_baseurl.is_empty() {
            return self.public_baseurl.clone();
        }
        if self.server_name == "localhost" {
            format!("http://{}/", self.listen)
        } else {
            format!("https://{}/", self.server_name)
        }
    }

    /// A commented TOML file with every key at its default.
    pub fn generate() -> String {
        DEFAULT_CONFIG_TOML.to_owned()
    }
}

/// The commented default configuration printed by `neurite generate-config`.
/// A unit test checks that it parses to `Config::default()`.
const DEFAULT_CONFIG_TOML: &str = r#"# Neurite configuration. Every key can also be set from the environment as
# NEURITE_<KEY in capitals>, e.g. NEURITE_SERVER_NAME=example.org, which wins
# over this file. Unknown keys are an error.

# The part after ':' in user IDs (@alice:example.org). Cannot change later.
server_name = "localhost"

# Address and port of the HTTP listener.
listen = "127.0.0.1:8008"

# Folder for the database and the signing key; created on first start.
data_dir = "./neurite-data"

# Base URL clients should use, served in /.well-known/matrix/client.
# Empty: http://<listen>/ when server_name is localhost, else https://<server_name>/.
public_baseurl = ""

# Who may register: "closed" (only `neurite create-account`), "token"
# (with a token from `neurite create-registration-token`) or "open"
# (anyone, m.login.dummy, no verification).
registration = "closed"

# Rate limits on the endpoints the spec marks rate-limited (login,
# registration, most authenticated ones): "on" or "off". A limited client
# gets 429 M_LIMIT_EXCEEDED with retry_after_ms.
rate_limits = "on"
# Sustained requests per second per user (per client address before login).
rate_limit_per_second = 10
# Requests allowed in a burst above that rate.
rate_limit_burst = 50

# Largest request body in bytes; larger gets 413 M_TOO_LARGE.
max_request_bytes = 1048576

# Lifetime in milliseconds of access tokens given to clients that ask for a
# refresh token (refresh_token: true). Other access tokens do not expire.
access_token_lifetime_ms = 300000

# Shortest password accepted, in characters (M_WEAK_PASSWORD below it).
password_min_length = 8

# Localparts nobody may register (M_EXCLUSIVE); those starting with '_' are
# always reserved.
reserved_usernames = []

# Log lines: "human" or "json"; filter in tracing syntax (a bad filter is a
# configuration error).
log_format = "human"
log_level = "info"

# Serve Prometheus metrics at /metrics.
metrics = true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_is_the_default() {
        let parsed: Config = toml::from_str(&Config::generate()).expect("generated config parses");
        assert_eq!(parsed, Config::default());
    }
}
