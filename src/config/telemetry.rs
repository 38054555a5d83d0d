//! `[telemetry]`: where the agent's spans are exported (see `src/telemetry.rs`), read from the
//! file and from the standard `OTEL_*` variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[telemetry]`: the agent's spans (`invoke_agent`, `chat`, `execute_tool`, after the
/// OpenTelemetry GenAI conventions) sent to an OTLP receiver: an OpenTelemetry Collector,
/// Jaeger, Grafana Tempo, Honeycomb, Langfuse. See `src/telemetry.rs`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver, such as `http://127.0.0.1:4318`; spans are posted
    /// to `<it>/v1/traces` (a URL that already ends in `/v1/traces` is used as it is). Unset:
    /// nothing is exported (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// The OTLP transport: `http/protobuf`, the only one built in
    /// (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute (`OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// Headers sent with every export, for a vendor's API key
    /// (`OTEL_EXPORTER_OTLP_HEADERS`, as `key=value,key2=value2`). `voxloop config` prints
    /// their names only.
    #[serde(serialize_with = "redacted_values")]
    pub headers: BTreeMap<String, String>,
    /// The share of turns traced, in [0, 1]: each trace is kept or dropped whole.
    pub sampling_ratio: f64,
    /// The longest one export (with its retries) may take; also bounds the flush at exit.
    pub timeout_seconds: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: "voxloop".to_owned(),
            headers: BTreeMap::new(),
            sampling_ratio: 1.0,
            timeout_seconds: 5.0,
        }
    }
}

/// How spans travel to the receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum OtlpProtocol {
    /// Protobuf messages posted over HTTP.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Writes a header table with every value replaced: the values are usually API keys.
fn redacted_values<S: serde::Serializer>(
    headers: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.keys().map(|key| (key, "<redacted>")))
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS`: `key=value` pairs separated by commas, values
/// percent-encoded. Errors name the entry by its position and key, never its value.
fn parse_otlp_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut headers = BTreeMap::new();
    for (i, entry) in text.split(',').enumerate().filter(|(_, e)| !e.trim().is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("entry {} has no `=`: expected key=value", i + 1));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("entry {} has an empty key", i + 1));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("the value of `{key}` is not valid percent-encoded UTF-8"))?;
        headers.insert(key.to_owned(), value);
    }
    Ok(headers)
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl TelemetryConfig {
    /// The standard OpenTelemetry variables, over `[telemetry]`. `OTEL_SDK_DISABLED=true`
    /// turns export off.
    pub(super) fn apply_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(endpoint) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.otlp_endpoint = Some(endpoint).filter(|e| !e.trim().is_empty());
        }
        if let Some(protocol) = env("OTEL_EXPORTER_OTLP_PROTOCOL") {
            if protocol.trim() != "http/protobuf" {
                return Err(ConfigError::Env {
                    var: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    message: format!("{protocol:?} is not supported: use http/protobuf"),
                });
            }
        }
        if let Some(name) = env("OTEL_SERVICE_NAME") {
            self.service_name = name;
        }
        if let Some(text) = env("OTEL_EXPORTER_OTLP_HEADERS") {
            let headers = parse_otlp_headers(&text).map_err(|message| ConfigError::Env {
                var: "OTEL_EXPORTER_OTLP_HEADERS",
                message,
            })?;
            self.headers.extend(headers);
        }
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            self.otlp_endpoint = None;
        }
        Ok(())
    }

    /// Checks `[telemetry]`: the endpoint is an http(s) URL, the headers are valid HTTP, the
    /// ratio is in [0, 1]. The errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| ConfigError::Value {
            field: format!("telemetry.{field}"),
            message,
        };
        if let Some(endpoint) = &self.otlp_endpoint {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| bad("otlp_endpoint", format!("{endpoint:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
                return Err(bad(
                    "otlp_endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL with a host"),
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(bad("otlp_endpoint", format!("{endpoint:?} has a query or fragment")));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad(
                    "otlp_endpoint",
                    "has a user name or password, which are not sent: put credentials in \
                     [telemetry.headers] (e.g. an Authorization header)"
                        .into(),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(bad("service_name", "is empty".into()));
        }
        for (key, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
                return Err(bad("headers", format!("{key:?} is not a valid HTTP header name")));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err(bad(
                    "headers",
                    format!("the value of {key:?} is not a valid header value"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(bad("sampling_ratio", format!("{} is not in [0, 1]", self.sampling_ratio)));
        }
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds <= 600.0) {
            return Err(bad(
                "timeout_seconds",
                format!("{} is not in (0, 600]", self.timeout_seconds),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    #[test]
    fn telemetry_table_is_read_and_off_by_default() {
        let config = Config::default();
        assert_eq!(config.telemetry.otlp_endpoint, None);
        assert_eq!(config.telemetry.service_name, "voxloop");
        config.telemetry.validate().unwrap();

        let text = "[telemetry]\notlp_endpoint = \"https://otel.example.com/api/otel\"\n\
                    protocol = \"http/protobuf\"\nservice_name = \"voice-desk\"\n\
                    sampling_ratio = 0.25\ntimeout_seconds = 2.5\n\
                    [telemetry.headers]\nx-api-key = \"k1\"\n";
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        let t = &config.telemetry;
        assert_eq!(t.otlp_endpoint.as_deref(), Some("https://otel.example.com/api/otel"));
        assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!((t.service_name.as_str(), t.sampling_ratio), ("voice-desk", 0.25));
        assert_eq!(t.timeout_seconds, 2.5);
        assert_eq!(t.headers.get("x-api-key").map(String::as_str), Some("k1"));
        config.telemetry.validate().unwrap();

        let err = Config::from_toml("[telemetry]\nprotocol = \"grpc\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("telemetry.protocol") && err.contains("grpc"), "{err}");
        let err = Config::from_toml("[telemetry]\nendpoint = \"x\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("endpoint"), "{err}");
    }

    #[test]
    fn printed_config_hides_header_values() {
        let mut config = Config::default();
        config.telemetry.headers.insert("authorization".into(), "Bearer s3cret".into());
        let text = toml::to_string_pretty(&config).unwrap();
        assert!(text.contains("authorization") && !text.contains("s3cret"), "{text}");
    }

    #[test]
    fn standard_otel_variables_override_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        let file = "[telemetry]\notlp_endpoint = \"http://file:4318\"\n\
                    [telemetry.headers]\nx-team = \"file\"\nx-keep = \"kept\"\n";
        std::fs::write(&path, file).unwrap();
        let env = |key: &str| {
            let value = match key {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL" => "http/protobuf",
                "OTEL_SERVICE_NAME" => "from-env",
                "OTEL_EXPORTER_OTLP_HEADERS" => "api-key=a%3Db%2Cc , x-team = env,",
                _ => return None,
            };
            Some(value.to_owned())
        };
        let t = Config::load(Some(&path), env).unwrap().telemetry;
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(t.service_name, "from-env");
        let headers: Vec<(&str, &str)> =
            t.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(headers, [("api-key", "a=b,c"), ("x-keep", "kept"), ("x-team", "env")]);

        let off = |key: &str| (key == "OTEL_SDK_DISABLED").then(|| "TRUE".to_owned());
        assert_eq!(Config::load(Some(&path), off).unwrap().telemetry.otlp_endpoint, None);
        let empty = |key: &str| (key == "OTEL_EXPORTER_OTLP_ENDPOINT").then(String::new);
        assert_eq!(Config::load(Some(&path), empty).unwrap().telemetry.otlp_endpoint, None);

        let grpc = |key: &str| (key == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "grpc".to_owned());
        let err = Config::load(Some(&path), grpc).unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("grpc"), "{err}");
        for bad in ["api-key", "=v", "k=%zz"] {
            let env = |key: &str| (key == "OTEL_EXPORTER_OTLP_HEADERS").then(|| bad.to_owned());
            let err = Config::load(Some(&path), env).unwrap_err().to_string();
            assert!(err.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{bad}: {err}");
        }
        let secret =
            |key: &str| (key == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "k=s3cr%".to_owned());
        let err = Config::load(Some(&path), secret).unwrap_err().to_string();
        assert!(err.contains("`k`") && !err.contains("s3cr"), "{err}");
    }

    #[test]
    fn telemetry_values_are_checked_by_field() {
        let check = |edit: &dyn Fn(&mut TelemetryConfig)| {
            let mut config = Config::default();
            edit(&mut config.telemetry);
            config.telemetry.validate().err().map(|e| e.to_string())
        };
        let endpoint = |url: &'static str| {
            move |t: &mut TelemetryConfig| {
                t.otlp_endpoint = Some(url.to_owned());
            }
        };
        assert_eq!(check(&endpoint("http://127.0.0.1:4318")), None);
        assert_eq!(check(&endpoint("https://cloud.langfuse.com/api/public/otel")), None);
        for url in ["127.0.0.1:4318", "localhost", "ftp://x:21", "http://h:4318/?a=1", "http://"] {
            let err = check(&endpoint(url)).unwrap_or_else(|| panic!("{url} accepted"));
            assert!(err.contains("telemetry.otlp_endpoint") && err.contains(url), "{err}");
        }
        for ratio in [1.5, -0.1, f64::NAN] {
            let err = check(&|t| t.sampling_ratio = ratio).unwrap();
            assert!(err.contains("telemetry.sampling_ratio"), "{err}");
        }
        let err = check(&endpoint("https://user:pa55@otel.example.com")).unwrap();
        assert!(err.contains("telemetry.otlp_endpoint") && !err.contains("pa55"), "{err}");
        assert_eq!(check(&|t| t.sampling_ratio = 0.0), None);
        for timeout in [0.0, -1.0, 1e9, f64::INFINITY] {
            let err = check(&|t| t.timeout_seconds = timeout).unwrap();
            assert!(err.contains("telemetry.timeout_seconds"), "{err}");
        }
        let err = check(&|t| t.service_name = " ".into()).unwrap();
        assert!(err.contains("telemetry.service_name"), "{err}");
        let err = check(&|t| {
            t.headers.insert("bad name".into(), "v".into());
        })
        .unwrap();
        assert!(err.contains("telemetry.headers") && err.contains("bad name"), "{err}");
        let err = check(&|t| {
            t.headers.insert("x-key".into(), "line\nbreak".into());
        })
        .unwrap();
        assert!(err.contains("telemetry.headers") && !err.contains("break"), "{err}");
    }
}
