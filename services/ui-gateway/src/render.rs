//! Server-side HTML for the pages around sign-in (the UI itself is a
//! script served from `assets/`): one minijinja template, auto-escaped.

use std::sync::Arc;

use minijinja::Environment;

/// The compiled templates. Cheap to clone.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

/// What a sign-in page shows.
#[derive(Debug, Default, serde::Serialize)]
pub struct Page<'a> {
    pub title: &'a str,
    pub message: Option<&'a str>,
    pub error: bool,
    pub token_form: bool,
    pub return_to: &'a str,
    pub link: Option<&'a str>,
    pub link_text: &'a str,
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.add_template("page.html", include_str!("templates/page.html"))
            .expect("the built-in page template parses");
        Self { env: Arc::new(env) }
    }

    pub fn page(&self, page: &Page<'_>) -> String {
        self.env
            .get_template("page.html")
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(page))))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot render a page");
                "cannot render the page".to_owned()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let html = Templates::new().page(&Page {
            title: "Sign in",
            message: Some("<script>alert(1)</script>"),
            error: true,
            token_form: true,
            return_to: "/\"><x>",
            ..Page::default()
        });
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("\"><x>"));
        assert!(html.contains("id=\"token-form\""));
    }
}
