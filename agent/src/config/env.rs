//! `${VAR}` and `${VAR:-default}` substitution inside the string values of
//! parsed configuration; `$$` writes a literal `$`. Unset variables without
//! a default are errors, all reported at once, each naming its key.
//!
//! Substituting after parsing, not in the text: a secret holding `"`, `\`
//! or a newline stays that exact string instead of ending the TOML string
//! (or changing what the file means), and a syntax error can only quote the
//! file, never a secret from the environment. Numbers and booleans are
//! written literally; `${VAR}` is a string's content.

/// What substitution put into the configuration, for scrubbing messages.
#[derive(Debug, Default)]
pub struct Substituted {
    /// Each value taken from the environment, with its variable's name.
    values: Vec<(String, String)>,
}

impl Substituted {
    /// `message` with every substituted value replaced by `<$NAME>`, as
    /// written and as escaped inside a quoted string (how serde's messages
    /// quote values), so no error shows what came from the environment.
    /// The longest first, so a value that contains another is hidden whole.
    pub fn scrub(&self, message: &str) -> String {
        let mut forms: Vec<(String, &str)> = Vec::new();
        for (name, value) in &self.values {
            let escaped = format!("{value:?}");
            let escaped = escaped[1..escaped.len() - 1].to_string();
            forms.push((escaped, name));
            forms.push((value.clone(), name));
        }
        forms.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let mut out = message.to_string();
        for (value, name) in forms {
            if !value.is_empty() {
                out = out.replace(value.as_str(), &format!("<${name}>"));
            }
        }
        out
    }
}

/// Substitutes variables in every string value under `table` (keys stay
/// as written); `lookup` reads the environment. Errors name the key path
/// and the variable, never a value.
pub fn substitute(
    table: &mut toml::Table,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Substituted, Vec<String>) {
    let mut done = Substituted::default();
    let mut errors = Vec::new();
    for (key, value) in table.iter_mut() {
        substitute_value(value, key, lookup, &mut done, &mut errors);
    }
    (done, errors)
}

/// The fuzz harness (`fuzz/`, which compiles this file on its own, and
/// the seed test): the first line holds `NAME=value` pairs separated by
/// spaces, the environment; the rest is configuration text, parsed as
/// TOML, substituted, and an error naming every value scrubbed. It made
/// sense when the text parsed and every variable resolved.
#[cfg(any(test, fuzzing))]
pub fn fuzz_substitute(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let (env, config) = text.split_once('\n').unwrap_or(("", &text));
    let lookup = |name: &str| {
        env.split(' ')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let Ok(mut table) = toml::from_str::<toml::Table>(config) else {
        return false;
    };
    let (done, errors) = substitute(&mut table, &lookup);
    let _ = done.scrub(&format!("{table:?} {errors:?}"));
    errors.is_empty()
}

fn substitute_value(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    done: &mut Substituted,
    errors: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            *s = substitute_str(s, path, lookup, done, errors);
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_value(item, &format!("{path}[{i}]"), lookup, done, errors);
            }
        }
        toml::Value::Table(t) => {
            for (key, item) in t.iter_mut() {
                substitute_value(item, &format!("{path}.{key}"), lookup, done, errors);
            }
        }
        _ => {}
    }
}

fn substitute_str(
    text: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    done: &mut Substituted,
    errors: &mut Vec<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        if let Some(tail) = after.strip_prefix("$$") {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_and_tail.find('}') else {
            errors.push(format!("{path}: `${{` without a closing `}}`"));
            out.push_str(after);
            rest = "";
            break;
        };
        let body = &body_and_tail[..end];
        rest = &body_and_tail[end + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            errors.push(format!(
                "{path}: `${{{body}}}` is not a valid variable reference"
            ));
            continue;
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => {
                out.push_str(&v);
                done.values.push((name.to_string(), v));
            }
            (None, Some(d)) => out.push_str(d),
            (None, None) => errors.push(format!(
                "{path}: environment variable {name} is not set; set it or write ${{{name}:-default}}"
            )),
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "NASTY" => Some("p\"w\\d\nx' ]]\n[evil]".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> (toml::Table, Substituted, Vec<String>) {
        let mut table: toml::Table = toml::from_str(text).unwrap();
        let (done, errors) = substitute(&mut table, &env);
        (table, done, errors)
    }

    #[test]
    fn substitutes_and_defaults() {
        let (t, _, errors) = run("x = \"${A} y=${B:-b} z=$$A w=$5\"\n[s]\nd = \"${EMPTY:-d}\"\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(t["x"].as_str(), Some("alpha y=b z=$A w=$5"));
        assert_eq!(t["s"]["d"].as_str(), Some("d"));
    }

    #[test]
    fn quotes_backslashes_and_newlines_stay_inside_the_value() {
        let (t, _, errors) = run("[db]\npassword = \"${NASTY}\"\nuser = 'u'\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(t["db"]["password"].as_str(), Some("p\"w\\d\nx' ]]\n[evil]"));
        assert_eq!(t.len(), 1, "the value added no table: {t:?}");
        assert_eq!(t["db"].as_table().unwrap().len(), 2);
    }

    #[test]
    fn missing_variables_all_reported_with_their_keys() {
        let (_, _, errs) = run("a = \"${X}\"\n[b]\nc = [\"${Y}\"]\nd = \"${1bad}\"\n");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs
            .iter()
            .any(|e| e.starts_with("a: ") && e.contains("X is not set")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("b.c[0]: ") && e.contains("Y is not set")));
        assert!(errs.iter().any(|e| e.starts_with("b.d: ")));
    }

    #[test]
    fn scrub_hides_every_substituted_value() {
        let (_, done, _) = run("a = \"${A}\"\nb = \"${NASTY}\"\n");
        let nasty = env("NASTY").unwrap();
        let raw = format!("b: invalid value {nasty} near alpha");
        assert_eq!(done.scrub(&raw), "b: invalid value <$NASTY> near <$A>");
        let quoted = format!("b: invalid value: string {nasty:?}");
        assert_eq!(done.scrub(&quoted), "b: invalid value: string \"<$NASTY>\"");
    }

    #[test]
    fn committed_fuzz_seeds_substitute() {
        steward_exporters::fuzzing::check_seeds(&[("config_env", fuzz_substitute)]);
    }
}
