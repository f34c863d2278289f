//! Starts the real `beehive` binary (`serve all`) against a private database and
//! installation prefix, on free ports, and talks to it over HTTP like a client.

#![allow(dead_code)]

pub mod ws;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use beehive_testkit::TestEnv;
use serde_json::Value;

/// A running `beehive serve all`.
pub struct Server {
    child: Option<Child>,
    pub http: String,
    pub admin: String,
    pub log: PathBuf,
    pub client: reqwest::Client,
    /// The addresses file the binary wrote (`http`, `admin`, `grpc.<component>`).
    pub addresses: Value,
    dir: PathBuf,
    _env: TestEnv,
}

/// A response: status, headers and parsed JSON body (Null when empty).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `error.code` of an API error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Server {
    /// Starts the binary with extra `BEEHIVE_*` settings.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let env = TestEnv::new(&[]).await;
        let dir = std::env::temp_dir().join(format!("beehive-e2e-{}", env.database()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let addr_file = dir.join("addresses.json");
        let log = dir.join("beehive.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_beehive"));
        command
            .args(["serve", "all", "--addr-file"])
            .arg(&addr_file)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BEEHIVE_DATABASE_URL", env.settings.database_url.expose())
            .env("BEEHIVE_REDIS_URL", env.settings.redis_url.expose())
            .env("BEEHIVE_AMQP_URL", env.settings.amqp_url.expose())
            .env("BEEHIVE_INSTALLATION", &env.settings.installation)
            .env("BEEHIVE_INSTANCE_ID", &env.settings.instance_id)
            .env("BEEHIVE_DATABASE_MAX_CONNECTIONS", "8")
            .env("BEEHIVE_HTTP_ADDR", "127.0.0.1:0")
            .env("BEEHIVE_ADMIN_ADDR", "127.0.0.1:0")
            .env("BEEHIVE_LOG_FORMAT", "json")
            .env("BEEHIVE_RATE_LIMITS", "off")
            .env("BEEHIVE_SEARCH_INDEX_DIR", dir.join("search-index"));
        for c in [
            "AUTH", "USER", "SOCIAL", "MESSAGE", "PRESENCE", "SEARCH", "FILE", "GATEWAY",
        ] {
            command.env(format!("BEEHIVE_{c}_LISTEN"), "127.0.0.1:0");
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::from(log_file.try_clone().expect("log clone")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn beehive");
        let mut server = Self {
            child: Some(child),
            http: String::new(),
            admin: String::new(),
            log,
            addresses: Value::Null,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            dir,
            _env: env,
        };
        let started = Instant::now();
        let addresses: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(value) = serde_json::from_str(&text)
            {
                break value;
            }
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("beehive exited with {status}:\n{}", server.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "beehive did not start within 60 s:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        server.addresses = addresses.clone();
        server.http = format!(
            "http://{}",
            addresses["http"].as_str().expect("http address")
        );
        server.admin = format!(
            "http://{}",
            addresses["admin"].as_str().expect("admin address")
        );
        // Ready means every dependency answers.
        loop {
            let ready = server
                .client
                .get(format!("{}/readyz", server.admin))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never ready:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a JSON request to `/api/v1{path}`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, format!("{}/api/v1{path}", self.http));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::reply(request.send().await.expect("request")).await
    }

    /// Sends raw bytes with a content type to `/api/v1{path}`.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, format!("{}/api/v1{path}", self.http))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Self::reply(request.send().await.expect("request")).await
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
