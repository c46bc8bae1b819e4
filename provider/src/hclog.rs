//! Logs on stderr as hclog JSON lines (`@level`, `@message`, `@module`,
//! `@timestamp` plus fields): go-plugin parses them and passes them on to
//! Terraform's log at the right level, so `TF_LOG=debug` shows them.
//! Stdout is never written to: it carries only the handshake line.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber. `level` is a tracing filter directive.
pub fn init(level: &str) {
    let filter = EnvFilter::new(format!("warn,provider={level},api={level}"));
    let _ = tracing_subscriber::registry()
        .with(HclogLayer.with_filter(filter))
        .try_init();
}

struct HclogLayer;

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = render(
            *meta.level(),
            meta.target(),
            fields.message.unwrap_or_default(),
            fields.rest,
        );
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}

/// One log line in hclog's JSON shape.
pub fn render(level: Level, module: &str, message: String, fields: Map<String, Value>) -> String {
    let mut obj = Map::new();
    obj.insert("@level".into(), Value::from(level_name(level)));
    obj.insert("@message".into(), Value::from(message));
    obj.insert("@module".into(), Value::from(format!("pgplane.{module}")));
    obj.insert(
        "@timestamp".into(),
        Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)),
    );
    for (k, v) in fields {
        obj.entry(k).or_insert(v);
    }
    Value::Object(obj).to_string()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.rest.insert(field.name().to_owned(), Value::from(text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.rest
                .insert(field.name().to_owned(), Value::from(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest
            .insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest
            .insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest
            .insert(field.name().to_owned(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_hclog_keys() {
        let mut f = Map::new();
        f.insert("instance_id".into(), Value::from("abc"));
        let line = render(Level::INFO, "provider::server", "hello".into(), f);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@level"], "info");
        assert_eq!(v["@message"], "hello");
        assert_eq!(v["@module"], "pgplane.provider::server");
        assert_eq!(v["instance_id"], "abc");
        assert!(chrono::DateTime::parse_from_rfc3339(v["@timestamp"].as_str().unwrap()).is_ok());
    }
}
