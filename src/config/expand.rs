//! `${VAR}` substitution in string values.
//!
//! Substitution happens on the parsed document, not on the text, so that only
//! values are expanded (never keys or comments) and a value containing quotes
//! cannot break the TOML around it. `$${` writes a literal `${`.

use toml_edit::{DocumentMut, Item, Value};

use super::locate::KeyPath;
use super::EnvSource;

/// A `${VAR}` that could not be expanded.
#[derive(Debug)]
pub(super) struct ExpandError {
    pub path: KeyPath,
    pub message: String,
}

/// Expands every `${VAR}` in the string values of `doc` in place; returns
/// one error per value that could not be expanded.
pub(super) fn expand_document(doc: &mut DocumentMut, env: &dyn EnvSource) -> Vec<ExpandError> {
    let mut errors = Vec::new();
    expand_item(doc.as_item_mut(), &KeyPath::default(), env, &mut errors);
    errors
}

fn expand_item(
    item: &mut Item,
    path: &KeyPath,
    env: &dyn EnvSource,
    errors: &mut Vec<ExpandError>,
) {
    match item {
        Item::None => {}
        Item::Value(v) => expand_value(v, path, env, errors),
        Item::Table(t) => {
            for (k, child) in t.iter_mut() {
                let child_path = path.key(k.get());
                expand_item(child, &child_path, env, errors);
            }
        }
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter_mut().enumerate() {
                let table_path = path.index(i);
                for (k, child) in t.iter_mut() {
                    let child_path = table_path.key(k.get());
                    expand_item(child, &child_path, env, errors);
                }
            }
        }
    }
}

fn expand_value(
    value: &mut Value,
    path: &KeyPath,
    env: &dyn EnvSource,
    errors: &mut Vec<ExpandError>,
) {
    match value {
        Value::String(s) => {
            if !s.value().contains('$') {
                return;
            }
            match expand_str(s.value(), env) {
                Ok(expanded) => {
                    if expanded != *s.value() {
                        *value = Value::from(expanded);
                    }
                }
                Err(message) => errors.push(ExpandError {
                    path: path.clone(),
                    message,
                }),
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                expand_value(v, &path.index(i), env, errors);
            }
        }
        Value::InlineTable(t) => {
            for (k, v) in t.iter_mut() {
                let child_path = path.key(k.get());
                expand_value(v, &child_path, env, errors);
            }
        }
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
}

/// Expands `${VAR}` in one string; `$${` is a literal `${`, any other `$`
/// stays as it is.
pub(super) fn expand_str(input: &str, env: &dyn EnvSource) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "`${{` without a closing `}}` in {input:?} (write `$${{` for a literal `${{`)"
                ));
            };
            let name = &tail[..end];
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{name}}}` is not a valid variable reference (names are letters, digits and `_`)"
                ));
            }
            match env.var(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("TOKEN".to_owned(), "s3cret".to_owned()),
            ("PORT".to_owned(), "8001".to_owned()),
        ])
    }

    #[test]
    fn expands_strings() {
        let e = env();
        assert_eq!(expand_str("${TOKEN}", &e).as_deref(), Ok("s3cret"));
        assert_eq!(
            expand_str("http://h:${PORT}/${TOKEN}", &e).as_deref(),
            Ok("http://h:8001/s3cret")
        );
        assert_eq!(expand_str("$${TOKEN}", &e).as_deref(), Ok("${TOKEN}"));
        assert_eq!(expand_str("$5 and $", &e).as_deref(), Ok("$5 and $"));
        assert!(expand_str("${NOPE}", &e).unwrap_err().contains("`NOPE`"));
        assert!(expand_str("${TOKEN", &e).is_err());
        assert!(expand_str("${1X}", &e).is_err());
    }

    #[test]
    fn expands_documents_but_not_comments() {
        let text =
            "# ${COMMENT}\na = \"${TOKEN}\"\n[t]\nb = [\"${PORT}\", { c = \"${MISSING}\" }]\n";
        let mut doc = toml_edit::ImDocument::parse(text)
            .expect("test document parses")
            .into_mut();
        let errors = expand_document(&mut doc, &env());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path.to_string(), "t.b[1].c");
        assert_eq!(doc["a"].as_str(), Some("s3cret"));
        assert_eq!(doc["t"]["b"][0].as_str(), Some("8001"));
    }
}
