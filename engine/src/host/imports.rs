//! The `host` interface plugins import: logging, the clock and HTTP through the host.
//! Every HTTP request is checked against the plugin's `network` grant first.

use super::bindings::newest_host::{HttpError, HttpHeader, HttpRequest, HttpResponse, LogLevel};
use super::PluginState;
use std::time::Duration;

/// Default per-request timeout when the plugin does not set one.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest per-request timeout a plugin may ask for.
const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest response body handed to a plugin; the rest is dropped (the request was made, so
/// failing it would make the plugin send it again).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Headers the host sets itself. `Host` in particular: the grant is checked against the
/// URL's host, so a plugin must not address another virtual host behind the same address.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "keep-alive",
];

impl PluginState {
    fn redact(&self, text: &str) -> String {
        crate::redact::redact(&self.secrets, text)
    }
}

/// The `host` interface, written once against the newest contract version's types; each
/// version's bindings (`bindings::common`) convert their records to these and call here.
impl PluginState {
    /// `log`: the plugin's message, redacted, as a tracing event tagged with its name.
    pub(super) fn host_log(&mut self, level: LogLevel, message: String) {
        let message = self.redact(&message);
        let plugin = self.plugin_name.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    /// `now-ms`: wall-clock milliseconds since the Unix epoch.
    pub(super) fn host_now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// `http-send`: the request, if the plugin's `network` grant allows its host. Waiting on
    /// the network is not charged to the guest: the call's future is pending meanwhile, and
    /// only polls count (see `cpu_clock`). A run that keeps requests (the delivery debugger,
    /// see `capture`) gets it and its answer, redacted.
    pub(super) async fn host_http_send(
        &mut self,
        request: HttpRequest,
    ) -> Result<HttpResponse, HttpError> {
        let now_ms = self.host_now_ms();
        let Some(started) = self.capture.as_mut().map(|c| c.start(&request, now_ms)) else {
            return self.send_checked(request).await;
        };
        let result = self.send_checked(request).await;
        if let Some(capture) = self.capture.as_mut() {
            capture.finish(started, &result, &self.plugin_name, &self.secrets);
        }
        result
    }

    /// `http-send` itself: checked against the grants, sent in the writer's turn.
    async fn send_checked(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(format!("bad URL {:?}: {e}", request.url)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(HttpError::InvalidRequest(format!(
                "unsupported URL scheme {:?}",
                url.scheme()
            )));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        if !self.grants.allows_host(&host, port) {
            tracing::warn!(plugin = %self.plugin_name, %host, port, "denied HTTP request to an ungranted host");
            return Err(HttpError::Denied(format!(
                "{host}:{port} is not granted to plugin {}; add \"{host}:{port}\" to its grants.network",
                self.plugin_name
            )));
        }
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                HttpError::InvalidRequest(format!("bad HTTP method {:?}", request.method))
            })?;
        let mut builder = self.http.request(method, url.clone());
        for HttpHeader { name, value } in &request.headers {
            if RESERVED_HEADERS
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r))
            {
                return Err(HttpError::InvalidRequest(format!(
                    "header {name:?} is set by the host and may not be sent by a plugin"
                )));
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(DEFAULT_HTTP_TIMEOUT)
            .min(MAX_HTTP_TIMEOUT);
        // A delivery's writer sends in its turn (see `request_gate`); the wait is not its own.
        if let Some(gate) = self.request_gate.as_mut() {
            if gate.enter(&self.clock.meter).await.is_err() {
                return Err(HttpError::Connection(
                    "not sent: the delivery stopped before this writer's turn to send".into(),
                ));
            }
        }
        if let Some(capture) = self.capture.as_mut() {
            capture.sending();
        }
        let response = builder
            .timeout(timeout)
            .body(request.body)
            .send()
            .await
            .map_err(|e| {
                let message = self.redact(&error_chain(&e));
                if e.is_timeout() {
                    HttpError::Timeout(message)
                } else if e.is_builder() {
                    HttpError::InvalidRequest(message)
                } else {
                    HttpError::Connection(message)
                }
            })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| HttpHeader {
                name: k.as_str().to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        let mut body = Vec::new();
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BYTES - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        tracing::warn!(plugin = %self.plugin_name, %url, "response body truncated to {MAX_RESPONSE_BYTES} bytes");
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(HttpError::Connection(self.redact(&error_chain(&e)))),
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// reqwest's top-level message is terse ("error sending request"); the cause says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Grants, Limits, PluginHost};
    use std::sync::Arc;

    fn host_resolving(
        answer: impl Fn(&str) -> std::io::Result<Vec<std::net::IpAddr>> + Send + Sync + 'static,
    ) -> PluginHost {
        let mut host = PluginHost::new(None).unwrap();
        host.set_resolver(Arc::new(answer));
        host
    }

    async fn send(host: &PluginHost, grant: &str, url: &str) -> Result<HttpResponse, HttpError> {
        let grants = Grants {
            network: vec![grant.parse().unwrap()],
            ..Default::default()
        };
        let mut store = host.new_store("dns", &grants, Limits::default()).unwrap();
        let request = HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![],
            body: b"[]".to_vec(),
            timeout_ms: Some(5000),
        };
        store.data_mut().host_http_send(request).await
    }

    /// The connection goes to the address the host's resolver checked, not to one looked up
    /// again elsewhere: the test's resolver answers `localhost` with 127.0.0.2, where the
    /// system resolver would say 127.0.0.1 (another receiver on the same port).
    #[tokio::test]
    async fn host_http_connects_to_the_address_its_check_resolved() {
        let checked =
            crate::toolkit::receiver::start("127.0.0.2:0".parse().unwrap(), Default::default())
                .await
                .unwrap();
        let port = checked.addr.port();
        let elsewhere = crate::toolkit::receiver::start(
            format!("127.0.0.1:{port}").parse().unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
        let host = host_resolving(|name| {
            assert_eq!(name, "localhost");
            Ok(vec!["127.0.0.2".parse().unwrap()])
        });
        let response = send(
            &host,
            &format!("localhost:{port}"),
            &format!("http://localhost:{port}/hook"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(response.status, 200);
        assert_eq!(
            (checked.received().len(), elsewhere.received().len()),
            (1, 0)
        );
    }

    /// DNS rebinding: a granted name whose DNS now answers with this machine's address (the
    /// service's own API, a local database) is refused, and nothing is sent there.
    #[tokio::test]
    async fn a_granted_name_pointed_at_this_machine_is_refused() {
        let local =
            crate::toolkit::receiver::start("127.0.0.1:0".parse().unwrap(), Default::default())
                .await
                .unwrap();
        let port = local.addr.port();
        let host = host_resolving(|_| Ok(vec!["127.0.0.1".parse().unwrap()]));
        let error = send(
            &host,
            &format!("api.example.test:{port}"),
            &format!("http://api.example.test:{port}/admin"),
        )
        .await
        .unwrap_err();
        let HttpError::Connection(message) = error else {
            panic!("{error:?}")
        };
        assert!(message.contains("api.example.test resolves to 127.0.0.1 (loopback or link-local), which a granted host name may not lead to"), "{message}");
        assert_eq!(local.received().len(), 0);
    }

    /// Issue 35: a granted name whose DNS answers with an internal address is refused before
    /// any connection, with the grant that would allow it. (A granted range is allowed by
    /// the same check, tested in `network`; nothing here connects outside loopback.)
    #[tokio::test]
    async fn a_granted_name_pointed_at_a_private_network_is_refused() {
        let host = host_resolving(|_| Ok(vec!["10.20.30.40".parse().unwrap()]));
        let error = send(
            &host,
            "crm.example.test:443",
            "https://crm.example.test/contacts",
        )
        .await
        .unwrap_err();
        let HttpError::Connection(message) = error else {
            panic!("{error:?}")
        };
        assert!(
            message.contains(r#"crm.example.test resolves to 10.20.30.40 (a private network"#)
                && message.contains(r#"add "10.20.30.40:*" (or "10.0.0.0/8:*") to grants.network"#),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_granted_name_that_does_not_resolve_fails_with_a_clear_error() {
        let host = host_resolving(|_| Err(std::io::Error::other("no such host")));
        let error = send(
            &host,
            "nowhere.example.test:80",
            "http://nowhere.example.test/",
        )
        .await
        .unwrap_err();
        let HttpError::Connection(message) = error else {
            panic!("{error:?}")
        };
        assert!(
            message.contains("cannot resolve nowhere.example.test: no such host"),
            "{message}"
        );
    }
}
