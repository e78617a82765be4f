//! Message templates: `{{ traits.first_name }}`, `{{ store.name }}`, `{{ owner.name }}`,
//! `{{ coupon.code }}`, with a fallback for missing values:
//! `{{ traits.first_name | default: "朋友" }}`.

use serde_json::Value;

/// The variables a template may name, by their first segment.
pub const ROOTS: [&str; 5] = ["traits", "store", "owner", "coupon", "profile"];

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var { path: Vec<String>, default: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template: {message} (at character {at})")]
pub struct TemplateError {
    pub message: String,
    pub at: usize,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = src;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let at = src[..offset + open].chars().count();
            let close = rest[open..].find("}}").ok_or_else(|| TemplateError { message: "`{{` is never closed with `}}`".into(), at })?;
            let inner = rest[open + 2..open + close].trim();
            pieces.push(variable(inner, at)?);
            offset += open + close + 2;
            rest = &rest[open + close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Fills the template from `vars` (an object keyed by [`ROOTS`]).
    pub fn render(&self, vars: &Value) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { path, default } => {
                    let v = path.iter().try_fold(vars, |v, k| v.get(k.as_str()));
                    match v {
                        Some(Value::String(s)) if !s.is_empty() => out.push_str(s),
                        Some(Value::Null) | None | Some(Value::String(_)) => out.push_str(default.as_deref().unwrap_or("")),
                        Some(other) => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }

    /// Whether the template names a coupon (so one must be issued per customer).
    pub fn uses(&self, root: &str) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Var { path, .. } if path[0] == root))
    }
}

fn variable(inner: &str, at: usize) -> Result<Piece, TemplateError> {
    let (name, default) = match inner.split_once('|') {
        Some((n, f)) => {
            let f = f.trim();
            let value = f
                .strip_prefix("default:")
                .map(str::trim)
                .and_then(|v| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .ok_or_else(|| TemplateError { message: format!("unknown filter `{f}`; the only filter is default: \"text\""), at })?;
            (n.trim(), Some(value.to_string()))
        }
        None => (inner, None),
    };
    let path: Vec<String> = name.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) || !ROOTS.contains(&path[0].as_str()) {
        return Err(TemplateError { message: format!("unknown variable `{name}`; variables start with one of {}", ROOTS.join(", ")), at });
    }
    Ok(Piece::Var { path, default })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_variables_with_defaults() {
        let t = Template::parse("{{ traits.first_name | default: \"朋友\" }}，{{ store.name }}的{{owner.name}}给您留了券 {{ coupon.code }}").unwrap();
        let vars = json!({"traits": {"first_name": "小林"}, "store": {"name": "静安店"}, "owner": {"name": "王芳"}, "coupon": {"code": "C-1"}});
        assert_eq!(t.render(&vars), "小林，静安店的王芳给您留了券 C-1");
        assert_eq!(t.render(&json!({})), "朋友，的给您留了券 ");
        assert!(t.uses("coupon"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(Template::parse("hi {{ name }}").unwrap_err().message.contains("unknown variable `name`"));
        assert_eq!(Template::parse("hi {{ traits.x").unwrap_err().at, 3);
        assert!(Template::parse("{{ traits.x | upper }}").unwrap_err().message.contains("unknown filter"));
        assert_eq!(Template::parse("plain").unwrap().render(&json!({})), "plain");
    }
}
