//! Server-side HTML: minijinja templates compiled into the binary, with
//! auto-escaping for `.html` and a few number filters.

use std::sync::Arc;

use minijinja::Environment;

/// The compiled templates. Cheap to clone.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

const DASH: &str = "–";

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| DASH.to_owned(), |v| format!("{:.1}%", v * 100.0))
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| DASH.to_owned(), |v| format!("{v:.2}"))
}

fn bytes(value: Option<f64>) -> String {
    let Some(mut v) = value else {
        return DASH.to_owned();
    };
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if v.abs() < 1024.0 {
            return if unit == "B" {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
}

fn ago(then_ms: Option<i64>, now_ms: i64) -> String {
    let Some(then) = then_ms.filter(|t| *t > 0) else {
        return DASH.to_owned();
    };
    let secs = (now_ms - then).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.add_template("overview.html", include_str!("templates/overview.html"))
            .expect("the built-in overview template parses");
        env.add_filter("percent", percent);
        env.add_filter("number", number);
        env.add_filter("bytes", bytes);
        env.add_filter("ago", ago);
        Self { env: Arc::new(env) }
    }

    pub fn render(
        &self,
        name: &str,
        context: minijinja::Value,
    ) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(percent(Some(0.1234)), "12.3%");
        assert_eq!(percent(None), DASH);
        assert_eq!(bytes(Some(512.0)), "512 B");
        assert_eq!(bytes(Some(3.5 * 1024.0 * 1024.0 * 1024.0)), "3.5 GiB");
        assert_eq!(ago(Some(1_000), 62_000), "1m ago");
        assert_eq!(ago(None, 5), DASH);
    }

    #[test]
    fn overview_escapes_what_it_shows() {
        let html = Templates::new()
            .render(
                "overview.html",
                minijinja::context! {
                    project => "default",
                    now_ms => 10_000,
                    errors => Vec::<String>::new(),
                    incidents => Vec::<String>::new(),
                    hosts => vec![minijinja::context! {
                        node => "web-1",
                        cluster => "",
                        cpu_usage_ratio => 0.5,
                        last_seen_ms => 9_000,
                        processes => vec![minijinja::context! {
                            pid => 7, name => "<script>x</script>", cpu_usage_cores => 0.25, memory_rss_bytes => 2048.0,
                        }],
                    }],
                },
            )
            .unwrap();
        assert!(html.contains("web-1"));
        assert!(html.contains("50.0%"));
        assert!(html.contains("2.0 KiB"));
        assert!(html.contains("&lt;script&gt;"), "process names are escaped");
        assert!(!html.contains("<script>x"));
        assert!(html.contains("No incidents."));
    }
}
