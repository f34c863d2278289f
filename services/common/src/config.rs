//! Process settings: `BEEHIVE_*` environment variables over an optional YAML file over
//! local defaults (DESIGN.md's process contract).
//!
//! Settings are read from a plain key/value map so tests can build them without
//! touching the process environment. Every key the services understand is listed in
//! [`ENV_KEYS`]; any other `BEEHIVE_*` variable or YAML key is reported at start-up so a
//! typo in a manifest does not silently fall back to a default.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The components of Beehive, in the order of their default gRPC ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Auth,
    User,
    Social,
    Message,
    Presence,
    Search,
    File,
    Gateway,
}

impl Component {
    /// Every component; `serve all` starts them in this order.
    pub const ALL: [Component; 8] = [
        Self::Auth,
        Self::User,
        Self::Social,
        Self::Message,
        Self::Presence,
        Self::Search,
        Self::File,
        Self::Gateway,
    ];

    /// Lowercase name, as used on the command line and in resource names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::User => "user",
            Self::Social => "social",
            Self::Message => "message",
            Self::Presence => "presence",
            Self::Search => "search",
            Self::File => "file",
            Self::Gateway => "gateway",
        }
    }

    /// Parses [`Component::name`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The default gRPC port: 50050.. in DESIGN.md's order; the gateway's internal gRPC
    /// (GatewayService) follows at 50057.
    pub fn default_grpc_port(self) -> u16 {
        match self {
            Self::Auth => 50050,
            Self::User => 50051,
            Self::Social => 50052,
            Self::Message => 50053,
            Self::Presence => 50054,
            Self::Search => 50055,
            Self::File => 50056,
            Self::Gateway => 50057,
        }
    }

    fn env_stem(self) -> &'static str {
        match self {
            Self::Auth => "AUTH",
            Self::User => "USER",
            Self::Social => "SOCIAL",
            Self::Message => "MESSAGE",
            Self::Presence => "PRESENCE",
            Self::Search => "SEARCH",
            Self::File => "FILE",
            Self::Gateway => "GATEWAY",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every `BEEHIVE_*` variable a Beehive process reads. The operator's contract test
/// checks that it sets nothing outside this list.
pub const ENV_KEYS: &[&str] = &[
    "BEEHIVE_CONFIG_FILE",
    "BEEHIVE_DATABASE_URL",
    "BEEHIVE_DATABASE_MAX_CONNECTIONS",
    "BEEHIVE_REDIS_URL",
    "BEEHIVE_AMQP_URL",
    "BEEHIVE_HTTP_ADDR",
    "BEEHIVE_ADMIN_ADDR",
    "BEEHIVE_INSTANCE_ID",
    "BEEHIVE_LOG_FORMAT",
    "BEEHIVE_LOG_LEVEL",
    "BEEHIVE_OTLP_ENDPOINT",
    "BEEHIVE_JWT_SECRET_FILE",
    "BEEHIVE_ELASTICSEARCH_URL",
    "BEEHIVE_INSTALLATION",
    "BEEHIVE_RATE_LIMITS",
    "BEEHIVE_TRUSTED_PROXIES",
    "BEEHIVE_CORS_ORIGINS",
    "BEEHIVE_SMTP_URL",
    "BEEHIVE_SMTP_FROM",
    "BEEHIVE_EMAIL_VERIFICATION",
    "BEEHIVE_ACCESS_TOKEN_TTL",
    "BEEHIVE_REFRESH_TOKEN_TTL",
    "BEEHIVE_SEARCH_BACKEND",
    "BEEHIVE_SEARCH_INDEX_DIR",
    "BEEHIVE_SEARCH_BATCH_SIZE",
    "BEEHIVE_SEARCH_COMMIT_INTERVAL",
    "BEEHIVE_FILE_STORAGE_DIR",
    "BEEHIVE_FILE_S3_URL",
    "BEEHIVE_FILE_MAX_SIZE",
    "BEEHIVE_FILE_UPLOAD_EXPIRY",
    "BEEHIVE_FILE_GC_GRACE",
    "BEEHIVE_GRPC_TIMEOUT",
    "BEEHIVE_GRPC_CONCURRENCY",
    "BEEHIVE_DNS_REFRESH",
    "BEEHIVE_WS_IDLE_TIMEOUT",
    "BEEHIVE_GATEWAY_DRAIN_WINDOW",
    "BEEHIVE_PRESENCE_TTL",
    "BEEHIVE_CONSOLE_DIR",
    "BEEHIVE_AUTH_ADDR",
    "BEEHIVE_AUTH_LISTEN",
    "BEEHIVE_USER_ADDR",
    "BEEHIVE_USER_LISTEN",
    "BEEHIVE_SOCIAL_ADDR",
    "BEEHIVE_SOCIAL_LISTEN",
    "BEEHIVE_MESSAGE_ADDR",
    "BEEHIVE_MESSAGE_LISTEN",
    "BEEHIVE_PRESENCE_ADDR",
    "BEEHIVE_PRESENCE_LISTEN",
    "BEEHIVE_SEARCH_ADDR",
    "BEEHIVE_SEARCH_LISTEN",
    "BEEHIVE_FILE_ADDR",
    "BEEHIVE_FILE_LISTEN",
    "BEEHIVE_GATEWAY_ADDR",
    "BEEHIVE_GATEWAY_LISTEN",
];

/// Variables with this prefix belong to test harnesses and are not reported.
const TEST_PREFIX: &str = "BEEHIVE_TEST_";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not a YAML map of settings: {message}")]
    Yaml { path: PathBuf, message: String },
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    Text,
    /// One JSON object per line, for containers and log pipelines.
    Json,
}

/// A URL that may hold a password: `Debug` and `Display` show it redacted so that
/// logging settings never leaks credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real URL, for connecting. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => "***".to_owned(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], redacted, &rest[at + 1..])
}

/// An IP network (`10.0.0.0/8`, `::1/128` or a bare address) of trusted proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V6(_), IpAddr::V4(v4)) => self.contains(IpAddr::V6(v4.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// Every setting of a Beehive process. Components read what they need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Prefix of every Redis key and RabbitMQ exchange/queue name.
    pub installation: String,
    /// This process's identity (the pod name); unique per gateway.
    pub instance_id: String,
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    pub redis_url: SecretUrl,
    pub amqp_url: SecretUrl,
    /// The gateway's public HTTP/WebSocket listen address.
    pub http_addr: SocketAddr,
    /// Admin HTTP (`/healthz`, `/readyz`, `/metrics`) listen address.
    pub admin_addr: SocketAddr,
    pub log_format: LogFormat,
    /// Default tracing filter when `RUST_LOG` is unset.
    pub log_level: String,
    pub otlp_endpoint: Option<String>,
    /// PKCS#8 PEM Ed25519 signing key; without it auth generates one into PostgreSQL.
    pub jwt_secret_file: Option<PathBuf>,
    pub elasticsearch_url: Option<SecretUrl>,
    /// Per-IP rate limits at the gateway; off only for load tests.
    pub rate_limits: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Allowed CORS origins; `*` allows any.
    pub cors_origins: Vec<String>,
    /// `smtp://user:pass@host:port` or `smtps://...`; without it codes are logged.
    pub smtp_url: Option<SecretUrl>,
    pub smtp_from: String,
    /// Whether an email given at registration must be verified with a code.
    pub email_verification: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// `embedded` (tantivy) or `elasticsearch`.
    pub search_backend: String,
    pub search_index_dir: PathBuf,
    /// Message events indexed in one commit at most.
    pub search_batch_size: u32,
    /// Longest wait between an event's arrival and the commit that makes it searchable.
    pub search_commit_interval: Duration,
    pub file_storage_dir: PathBuf,
    pub file_s3_url: Option<SecretUrl>,
    /// Largest file accepted, in bytes (uploads and instant uploads).
    pub file_max_size: u64,
    /// An unfinished upload is forgotten (and its bytes removed) this long after its
    /// creation.
    pub file_upload_expiry: Duration,
    /// Content no file references any more, and expired uploads, are removed this long
    /// after (so a concurrent instant upload or a late resume is never cut short).
    pub file_gc_grace: Duration,
    /// Deadline of every gRPC call.
    pub grpc_timeout: Duration,
    /// In-flight gRPC requests per server (beyond: `unavailable`) and per client.
    pub grpc_concurrency: usize,
    /// How often clients re-resolve the DNS names of other components.
    pub dns_refresh: Duration,
    /// A WebSocket silent for longer is closed.
    pub ws_idle_timeout: Duration,
    /// On shutdown a gateway closes its WebSockets in waves spread over this window,
    /// so its clients do not all reconnect elsewhere at once (0: close at once).
    pub gateway_drain_window: Duration,
    /// How long a connection counts as online after its last registration or
    /// heartbeat (presence; gateways learn it from the heartbeat answer).
    pub presence_ttl: Duration,
    /// The built web console the gateway serves at `/` (`console/dist`); unset: looked
    /// up next to the working directory and the binary.
    pub console_dir: Option<PathBuf>,
    /// Where each component listens for gRPC (port 0: any free port, for tests).
    listen: BTreeMap<Component, SocketAddr>,
    /// Where clients reach each component.
    addrs: BTreeMap<Component, String>,
}

/// Unknown keys found while loading, to be logged once telemetry is up.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub unknown_keys: Vec<String>,
}

impl Settings {
    /// Local defaults of DESIGN.md: everything on this machine.
    pub fn local_defaults() -> Self {
        Self::from_map(&BTreeMap::new())
            .map(|(settings, _)| settings)
            .unwrap_or_else(|_| unreachable!("defaults are valid"))
    }

    /// Reads the process environment and the YAML file named by `BEEHIVE_CONFIG_FILE`
    /// (or `config_file`), environment winning.
    pub fn load(config_file: Option<&std::path::Path>) -> Result<(Self, LoadReport), ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(key, _)| key.starts_with("BEEHIVE_"))
            .collect();
        let file = config_file
            .map(PathBuf::from)
            .or_else(|| env.get("BEEHIVE_CONFIG_FILE").map(PathBuf::from));
        let mut merged = match file {
            Some(path) => read_yaml(&path)?,
            None => BTreeMap::new(),
        };
        merged.extend(env);
        Self::from_map(&merged)
    }

    /// Builds settings from `BEEHIVE_*` keys; missing keys take local defaults.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<(Self, LoadReport), ConfigError> {
        let report = LoadReport {
            unknown_keys: map
                .keys()
                .filter(|k| !ENV_KEYS.contains(&k.as_str()) && !k.starts_with(TEST_PREFIX))
                .cloned()
                .collect(),
        };
        let get = |key: &str| map.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let string = |key: &str, default: &str| get(key).unwrap_or(default).to_owned();
        let parse_with = |key: &str, default: &str, f: &dyn Fn(&str) -> Result<(), String>| {
            let value = get(key).unwrap_or(default);
            f(value).map_err(|message| ConfigError::Invalid {
                key: key.to_owned(),
                message,
            })?;
            Ok::<_, ConfigError>(value.to_owned())
        };
        let addr = |key: &str, default: &str| -> Result<SocketAddr, ConfigError> {
            let value = get(key).unwrap_or(default);
            value.parse().map_err(|_| ConfigError::Invalid {
                key: key.to_owned(),
                message: format!("{value:?} is not a socket address such as 0.0.0.0:8080"),
            })
        };
        let duration = |key: &str, default: &str| -> Result<Duration, ConfigError> {
            let value = get(key).unwrap_or(default);
            parse_duration(value).ok_or_else(|| ConfigError::Invalid {
                key: key.to_owned(),
                message: format!("{value:?} is not a duration such as 900, 15m, 7d or 500ms"),
            })
        };
        let boolean = |key: &str, default: bool| -> Result<bool, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => parse_bool(v).ok_or_else(|| ConfigError::Invalid {
                    key: key.to_owned(),
                    message: format!("{v:?} is not one of on/off, true/false, 1/0"),
                }),
            }
        };
        let number = |key: &str, default: u32| -> Result<u32, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: key.to_owned(),
                        message: format!("{v:?} is not a positive integer"),
                    }),
            }
        };

        let installation = parse_with("BEEHIVE_INSTALLATION", "beehive", &|v| {
            let ok = !v.is_empty()
                && v.len() <= 63
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            ok.then_some(())
                .ok_or_else(|| "must be 1-63 characters of letters, digits, '-' and '_'".to_owned())
        })?;
        let log_format = match get("BEEHIVE_LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    key: "BEEHIVE_LOG_FORMAT".into(),
                    message: format!("{other:?} is not text or json"),
                });
            }
        };
        let trusted_proxies = get("BEEHIVE_TRUSTED_PROXIES")
            .map(|list| {
                list.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(str::parse)
                    .collect::<Result<Vec<IpNet>, String>>()
            })
            .transpose()
            .map_err(|message| ConfigError::Invalid {
                key: "BEEHIVE_TRUSTED_PROXIES".into(),
                message,
            })?
            .unwrap_or_default();
        let search_backend = parse_with("BEEHIVE_SEARCH_BACKEND", "embedded", &|v| {
            matches!(v, "embedded" | "elasticsearch")
                .then_some(())
                .ok_or_else(|| format!("{v:?} is not embedded or elasticsearch"))
        })?;

        let mut listen = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for component in Component::ALL {
            let port = component.default_grpc_port();
            let stem = component.env_stem();
            listen.insert(
                component,
                addr(
                    &format!("BEEHIVE_{stem}_LISTEN"),
                    &format!("0.0.0.0:{port}"),
                )?,
            );
            let key = format!("BEEHIVE_{stem}_ADDR");
            let target = string(&key, &format!("http://127.0.0.1:{port}"));
            if !(target.starts_with("http://") || target.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{target:?} must be an http:// or https:// URL"),
                });
            }
            addrs.insert(component, target);
        }

        let settings = Self {
            installation,
            instance_id: get("BEEHIVE_INSTANCE_ID")
                .map(str::to_owned)
                .unwrap_or_else(default_instance_id),
            database_url: SecretUrl::new(string(
                "BEEHIVE_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/beehive",
            )),
            database_max_connections: number("BEEHIVE_DATABASE_MAX_CONNECTIONS", 16)?,
            redis_url: SecretUrl::new(string("BEEHIVE_REDIS_URL", "redis://127.0.0.1:6379")),
            amqp_url: SecretUrl::new(string(
                "BEEHIVE_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            )),
            http_addr: addr("BEEHIVE_HTTP_ADDR", "0.0.0.0:8080")?,
            admin_addr: addr("BEEHIVE_ADMIN_ADDR", "0.0.0.0:9090")?,
            log_format,
            log_level: string("BEEHIVE_LOG_LEVEL", "info"),
            otlp_endpoint: get("BEEHIVE_OTLP_ENDPOINT").map(str::to_owned),
            jwt_secret_file: get("BEEHIVE_JWT_SECRET_FILE").map(PathBuf::from),
            elasticsearch_url: get("BEEHIVE_ELASTICSEARCH_URL").map(SecretUrl::new),
            rate_limits: boolean("BEEHIVE_RATE_LIMITS", true)?,
            trusted_proxies,
            cors_origins: get("BEEHIVE_CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            smtp_url: get("BEEHIVE_SMTP_URL").map(SecretUrl::new),
            smtp_from: string("BEEHIVE_SMTP_FROM", "Beehive <no-reply@beehive.local>"),
            email_verification: boolean("BEEHIVE_EMAIL_VERIFICATION", true)?,
            access_token_ttl: duration("BEEHIVE_ACCESS_TOKEN_TTL", "15m")?,
            refresh_token_ttl: duration("BEEHIVE_REFRESH_TOKEN_TTL", "7d")?,
            search_backend,
            search_index_dir: PathBuf::from(string("BEEHIVE_SEARCH_INDEX_DIR", "./data/search")),
            search_batch_size: number("BEEHIVE_SEARCH_BATCH_SIZE", 500)?,
            search_commit_interval: duration("BEEHIVE_SEARCH_COMMIT_INTERVAL", "500ms")?,
            file_storage_dir: PathBuf::from(string("BEEHIVE_FILE_STORAGE_DIR", "./data/files")),
            file_s3_url: get("BEEHIVE_FILE_S3_URL").map(SecretUrl::new),
            file_max_size: {
                let value = get("BEEHIVE_FILE_MAX_SIZE").unwrap_or("100MiB");
                parse_size(value)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: "BEEHIVE_FILE_MAX_SIZE".into(),
                        message: format!(
                            "{value:?} is not a size such as 104857600, 100MiB or 2GiB"
                        ),
                    })?
            },
            file_upload_expiry: duration("BEEHIVE_FILE_UPLOAD_EXPIRY", "24h")?,
            file_gc_grace: duration("BEEHIVE_FILE_GC_GRACE", "1h")?,
            grpc_timeout: duration("BEEHIVE_GRPC_TIMEOUT", "10s")?,
            grpc_concurrency: number("BEEHIVE_GRPC_CONCURRENCY", 1024)? as usize,
            dns_refresh: duration("BEEHIVE_DNS_REFRESH", "10s")?,
            ws_idle_timeout: duration("BEEHIVE_WS_IDLE_TIMEOUT", "60s")?,
            gateway_drain_window: duration("BEEHIVE_GATEWAY_DRAIN_WINDOW", "30s")?,
            presence_ttl: duration("BEEHIVE_PRESENCE_TTL", "30s")?,
            console_dir: get("BEEHIVE_CONSOLE_DIR").map(PathBuf::from),
            listen,
            addrs,
        };
        Ok((settings, report))
    }

    /// Where `component` listens for gRPC.
    pub fn listen_addr(&self, component: Component) -> SocketAddr {
        self.listen[&component]
    }

    /// Overrides where `component` listens (tests bind port 0 and then publish the
    /// real address with [`Settings::set_component_addr`]).
    pub fn set_listen_addr(&mut self, component: Component, addr: SocketAddr) {
        self.listen.insert(component, addr);
    }

    /// The URL clients use to reach `component`.
    pub fn component_addr(&self, component: Component) -> &str {
        &self.addrs[&component]
    }

    /// Overrides the URL clients use to reach `component`.
    pub fn set_component_addr(&mut self, component: Component, url: impl Into<String>) {
        self.addrs.insert(component, url.into());
    }

    /// A Redis key or RabbitMQ name under this installation's prefix:
    /// `prefixed("presence:user:42")` is `beehive:presence:user:42`.
    pub fn prefixed(&self, name: &str) -> String {
        format!("{}:{}", self.installation, name)
    }
}

fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("local-{}", std::process::id()))
}

/// Parses `900`, `900s`, `15m`, `2h`, `7d` or `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// Parses a byte size: `1048576`, `512KiB`, `100MiB`, `2GiB` (also `KB`/`MB`/`GB` as
/// powers of 1000).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Reads a YAML map. Keys may be given as `BEEHIVE_DATABASE_URL` or `database_url`.
fn read_yaml(path: &std::path::Path) -> Result<BTreeMap<String, String>, ConfigError> {
    const MAX_CONFIG_BYTES: u64 = 1 << 20;
    let file_error = |source| ConfigError::File {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(file_error)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::Yaml {
            path: path.to_owned(),
            message: format!("file is {size} bytes, the limit is {MAX_CONFIG_BYTES}"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(file_error)?;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Yaml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    raw.into_iter()
        .map(|(key, value)| {
            let key = if key.starts_with("BEEHIVE_") {
                key
            } else {
                format!("BEEHIVE_{}", key.to_ascii_uppercase())
            };
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_process_contract() {
        let s = Settings::local_defaults();
        assert_eq!(s.http_addr.port(), 8080);
        assert_eq!(s.admin_addr.port(), 9090);
        assert_eq!(s.listen_addr(Component::Auth).port(), 50050);
        assert_eq!(s.listen_addr(Component::File).port(), 50056);
        assert_eq!(
            s.component_addr(Component::Message),
            "http://127.0.0.1:50053"
        );
        assert_eq!(s.installation, "beehive");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(7 * 86_400));
        assert!(s.email_verification && s.rate_limits);
        assert_eq!(s.gateway_drain_window, Duration::from_secs(30));
    }

    #[test]
    fn the_drain_window_is_a_duration_and_may_be_zero() {
        let (s, _) =
            Settings::from_map(&map(&[("BEEHIVE_GATEWAY_DRAIN_WINDOW", "0s")])).expect("valid");
        assert_eq!(s.gateway_drain_window, Duration::ZERO);
        let (s, _) =
            Settings::from_map(&map(&[("BEEHIVE_GATEWAY_DRAIN_WINDOW", "2500ms")])).expect("valid");
        assert_eq!(s.gateway_drain_window, Duration::from_millis(2500));
        let error = Settings::from_map(&map(&[("BEEHIVE_GATEWAY_DRAIN_WINDOW", "soon")]))
            .expect_err("not a duration");
        assert!(
            error
                .to_string()
                .starts_with("BEEHIVE_GATEWAY_DRAIN_WINDOW")
        );
    }

    #[test]
    fn unknown_keys_are_reported_and_test_keys_ignored() {
        let (_, report) = Settings::from_map(&map(&[
            ("BEEHIVE_DATABSE_URL", "x"),
            ("BEEHIVE_TEST_ELASTICSEARCH_URL", "y"),
        ]))
        .expect("valid");
        assert_eq!(report.unknown_keys, vec!["BEEHIVE_DATABSE_URL".to_owned()]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("BEEHIVE_HTTP_ADDR", "nope"),
            ("BEEHIVE_ACCESS_TOKEN_TTL", "soon"),
            ("BEEHIVE_RATE_LIMITS", "maybe"),
            ("BEEHIVE_LOG_FORMAT", "xml"),
            ("BEEHIVE_INSTALLATION", "a b"),
            ("BEEHIVE_TRUSTED_PROXIES", "10.0.0.0/40"),
            ("BEEHIVE_AUTH_ADDR", "auth:50050"),
        ] {
            let error = Settings::from_map(&map(&[(key, value)])).expect_err(key);
            assert!(error.to_string().starts_with(key), "{error}");
        }
    }

    #[test]
    fn every_component_has_listen_and_addr_keys() {
        for c in Component::ALL {
            let stem = c.env_stem();
            assert!(ENV_KEYS.contains(&format!("BEEHIVE_{stem}_LISTEN").as_str()));
            assert!(ENV_KEYS.contains(&format!("BEEHIVE_{stem}_ADDR").as_str()));
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let (s, _) = Settings::from_map(&map(&[(
            "BEEHIVE_DATABASE_URL",
            "postgres://app:hunter2@db:5432/beehive",
        )]))
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("postgres://app:***@db:5432/beehive"));
        assert_eq!(redact_url("redis://:pw@r:6379"), "redis://:***@r:6379");
        assert_eq!(redact_url("redis://r:6379"), "redis://r:6379");
    }

    #[test]
    fn file_limits_parse_sizes_and_durations() {
        let s = Settings::local_defaults();
        assert_eq!(s.file_max_size, 100 << 20);
        assert_eq!(s.file_upload_expiry, Duration::from_secs(86_400));
        let (s, _) = Settings::from_map(&map(&[
            ("BEEHIVE_FILE_MAX_SIZE", "2GiB"),
            ("BEEHIVE_FILE_UPLOAD_EXPIRY", "30m"),
        ]))
        .expect("valid");
        assert_eq!(s.file_max_size, 2 << 30);
        assert_eq!(s.file_upload_expiry, Duration::from_secs(1800));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("5 KB"), Some(5000));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("99999999999999GiB"), None);
        for bad in ["0", "lots", "-1MiB"] {
            let error = Settings::from_map(&map(&[("BEEHIVE_FILE_MAX_SIZE", bad)])).expect_err(bad);
            assert!(error.to_string().starts_with("BEEHIVE_FILE_MAX_SIZE"));
        }
    }

    #[test]
    fn durations_and_networks_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("-1"), None);
        let net: IpNet = "10.1.0.0/16".parse().expect("net");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        let any: IpNet = "0.0.0.0/0".parse().expect("net");
        assert!(any.contains("192.168.1.1".parse().expect("ip")));
        let local: IpNet = "::1".parse().expect("net");
        assert!(local.contains("::1".parse().expect("ip")));
    }

    #[test]
    fn yaml_file_is_read_and_env_style_keys_accepted() {
        let dir = std::env::temp_dir().join(format!("beehive-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("beehive.yaml");
        std::fs::write(
            &path,
            "installation: staging\nBEEHIVE_RATE_LIMITS: off\ncors_origins: [\"https://a\", \"https://b\"]\nsurprise: 1\n",
        )
        .expect("write");
        let values = read_yaml(&path).expect("yaml");
        let (s, report) = Settings::from_map(&values).expect("valid");
        assert_eq!(s.installation, "staging");
        assert!(!s.rate_limits);
        assert_eq!(s.cors_origins, vec!["https://a", "https://b"]);
        assert_eq!(report.unknown_keys, vec!["BEEHIVE_SURPRISE".to_owned()]);
    }
}

/// One documented setting: its variable, default and meaning. `beehive --help` and the
/// README's configuration reference are generated from this table.
pub struct SettingDoc {
    pub key: &'static str,
    pub default: &'static str,
    pub description: &'static str,
}

const fn doc(key: &'static str, default: &'static str, description: &'static str) -> SettingDoc {
    SettingDoc {
        key,
        default,
        description,
    }
}

/// Every setting, documented (same keys as [`ENV_KEYS`], in the same order).
pub const SETTINGS_DOC: &[SettingDoc] = &[
    doc(
        "BEEHIVE_CONFIG_FILE",
        "(none)",
        "YAML file with any of these settings (keys as here or lowercase without the prefix); the environment wins.",
    ),
    doc(
        "BEEHIVE_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/beehive",
        "PostgreSQL URL; the database is created if absent.",
    ),
    doc(
        "BEEHIVE_DATABASE_MAX_CONNECTIONS",
        "16",
        "Connection pool size per process.",
    ),
    doc(
        "BEEHIVE_REDIS_URL",
        "redis://127.0.0.1:6379",
        "Redis URL (presence, rate limits, revocation cache and push).",
    ),
    doc(
        "BEEHIVE_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "RabbitMQ URL (event delivery to gateways).",
    ),
    doc(
        "BEEHIVE_HTTP_ADDR",
        "0.0.0.0:8080",
        "Gateway HTTP + WebSocket listen address.",
    ),
    doc(
        "BEEHIVE_ADMIN_ADDR",
        "0.0.0.0:9090",
        "Admin listen address: /healthz, /readyz, /metrics.",
    ),
    doc(
        "BEEHIVE_INSTANCE_ID",
        "$HOSTNAME",
        "This process's identity (the pod name); must be unique per gateway.",
    ),
    doc(
        "BEEHIVE_LOG_FORMAT",
        "text",
        "text for terminals, json for containers.",
    ),
    doc(
        "BEEHIVE_LOG_LEVEL",
        "info",
        "Default log filter (RUST_LOG overrides).",
    ),
    doc(
        "BEEHIVE_OTLP_ENDPOINT",
        "(none)",
        "OTLP collector for traces (reserved; this build logs a warning).",
    ),
    doc(
        "BEEHIVE_JWT_SECRET_FILE",
        "(none)",
        "PKCS#8 PEM Ed25519 signing key; without it auth generates one into PostgreSQL.",
    ),
    doc(
        "BEEHIVE_ELASTICSEARCH_URL",
        "(none)",
        "Elasticsearch URL for the elasticsearch search backend; user:password in it is sent as basic auth and never logged.",
    ),
    doc(
        "BEEHIVE_INSTALLATION",
        "beehive",
        "Prefix of every Redis key and RabbitMQ name, so installations sharing servers never meet.",
    ),
    doc(
        "BEEHIVE_RATE_LIMITS",
        "on",
        "Per-IP rate limits at the gateway; off only for load tests.",
    ),
    doc(
        "BEEHIVE_TRUSTED_PROXIES",
        "(none)",
        "Comma-separated IPs/CIDRs whose X-Forwarded-For is believed.",
    ),
    doc(
        "BEEHIVE_CORS_ORIGINS",
        "(none)",
        "Comma-separated allowed CORS origins, or *.",
    ),
    doc(
        "BEEHIVE_SMTP_URL",
        "(none)",
        "smtp(s)://user:pass@host:port for verification mails; without it codes are logged.",
    ),
    doc(
        "BEEHIVE_SMTP_FROM",
        "Beehive <no-reply@beehive.local>",
        "Sender of verification mails.",
    ),
    doc(
        "BEEHIVE_EMAIL_VERIFICATION",
        "on",
        "Require a code for an email given at registration.",
    ),
    doc(
        "BEEHIVE_ACCESS_TOKEN_TTL",
        "15m",
        "Access token lifetime (900, 15m, 1h, ...).",
    ),
    doc("BEEHIVE_REFRESH_TOKEN_TTL", "7d", "Refresh token lifetime."),
    doc(
        "BEEHIVE_SEARCH_BACKEND",
        "embedded",
        "embedded (tantivy) or elasticsearch.",
    ),
    doc(
        "BEEHIVE_SEARCH_INDEX_DIR",
        "./data/search",
        "Directory of the embedded search index.",
    ),
    doc(
        "BEEHIVE_SEARCH_BATCH_SIZE",
        "500",
        "Message events indexed in one commit at most.",
    ),
    doc(
        "BEEHIVE_SEARCH_COMMIT_INTERVAL",
        "500ms",
        "Longest wait before indexed events are committed (searchable).",
    ),
    doc(
        "BEEHIVE_FILE_STORAGE_DIR",
        "./data/files",
        "Directory of stored files (a PVC in Kubernetes).",
    ),
    doc(
        "BEEHIVE_FILE_S3_URL",
        "(none)",
        "S3-compatible bucket for files instead of the directory: s3://KEY:SECRET@host[:port]/bucket (HTTPS) or s3+http://... (plain HTTP), optional ?region=; without KEY:SECRET the AWS_* environment variables are used.",
    ),
    doc(
        "BEEHIVE_FILE_MAX_SIZE",
        "100MiB",
        "Largest file accepted (bytes, or KiB/MiB/GiB).",
    ),
    doc(
        "BEEHIVE_FILE_UPLOAD_EXPIRY",
        "24h",
        "An unfinished upload expires this long after its creation (tus Upload-Expires).",
    ),
    doc(
        "BEEHIVE_FILE_GC_GRACE",
        "1h",
        "Content no file references any more, and expired uploads, are deleted this long after.",
    ),
    doc(
        "BEEHIVE_GRPC_TIMEOUT",
        "10s",
        "Deadline of every internal gRPC call.",
    ),
    doc(
        "BEEHIVE_GRPC_CONCURRENCY",
        "1024",
        "In-flight gRPC calls per server and per client; beyond it calls fail fast with unavailable.",
    ),
    doc(
        "BEEHIVE_DNS_REFRESH",
        "10s",
        "How often clients re-resolve other components' DNS names.",
    ),
    doc(
        "BEEHIVE_WS_IDLE_TIMEOUT",
        "60s",
        "A WebSocket silent for longer is closed.",
    ),
    doc(
        "BEEHIVE_GATEWAY_DRAIN_WINDOW",
        "30s",
        "On SIGTERM a gateway tells its WebSocket clients to reconnect elsewhere and closes their sockets in waves spread over this window (0s: at once); keep it below the pod's termination grace period.",
    ),
    doc(
        "BEEHIVE_PRESENCE_TTL",
        "30s",
        "How long a connection counts as online after its last heartbeat (presence).",
    ),
    doc(
        "BEEHIVE_CONSOLE_DIR",
        "(console/dist)",
        "The built web console served at / by the gateway; unset: console/dist under the working directory or above the binary.",
    ),
    doc(
        "BEEHIVE_AUTH_ADDR",
        "http://127.0.0.1:50050",
        "Where clients reach auth (a headless Service in Kubernetes).",
    ),
    doc(
        "BEEHIVE_AUTH_LISTEN",
        "0.0.0.0:50050",
        "auth's gRPC listen address (port 0: any free port).",
    ),
    doc(
        "BEEHIVE_USER_ADDR",
        "http://127.0.0.1:50051",
        "Where clients reach user.",
    ),
    doc(
        "BEEHIVE_USER_LISTEN",
        "0.0.0.0:50051",
        "user's gRPC listen address.",
    ),
    doc(
        "BEEHIVE_SOCIAL_ADDR",
        "http://127.0.0.1:50052",
        "Where clients reach social.",
    ),
    doc(
        "BEEHIVE_SOCIAL_LISTEN",
        "0.0.0.0:50052",
        "social's gRPC listen address.",
    ),
    doc(
        "BEEHIVE_MESSAGE_ADDR",
        "http://127.0.0.1:50053",
        "Where clients reach message.",
    ),
    doc(
        "BEEHIVE_MESSAGE_LISTEN",
        "0.0.0.0:50053",
        "message's gRPC listen address.",
    ),
    doc(
        "BEEHIVE_PRESENCE_ADDR",
        "http://127.0.0.1:50054",
        "Where clients reach presence.",
    ),
    doc(
        "BEEHIVE_PRESENCE_LISTEN",
        "0.0.0.0:50054",
        "presence's gRPC listen address.",
    ),
    doc(
        "BEEHIVE_SEARCH_ADDR",
        "http://127.0.0.1:50055",
        "Where clients reach search.",
    ),
    doc(
        "BEEHIVE_SEARCH_LISTEN",
        "0.0.0.0:50055",
        "search's gRPC listen address.",
    ),
    doc(
        "BEEHIVE_FILE_ADDR",
        "http://127.0.0.1:50056",
        "Where clients reach file.",
    ),
    doc(
        "BEEHIVE_FILE_LISTEN",
        "0.0.0.0:50056",
        "file's gRPC listen address.",
    ),
    doc(
        "BEEHIVE_GATEWAY_ADDR",
        "http://127.0.0.1:50057",
        "Where services reach a gateway's internal gRPC (reserved).",
    ),
    doc(
        "BEEHIVE_GATEWAY_LISTEN",
        "0.0.0.0:50057",
        "The gateway's internal gRPC listen address (reserved).",
    ),
];

/// The configuration reference as a Markdown table (README and `beehive config-reference`).
pub fn settings_markdown() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS_DOC {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            s.key, s.default, s.description
        ));
    }
    out
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn every_key_is_documented_in_order() {
        let documented: Vec<&str> = SETTINGS_DOC.iter().map(|d| d.key).collect();
        assert_eq!(documented, ENV_KEYS);
    }
}
