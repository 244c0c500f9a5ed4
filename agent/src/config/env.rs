//! `${VAR}` and `${VAR:-default}` substitution in configuration text, before
//! it is parsed; `$$` writes a literal `$`. Unset variables without a default
//! are errors, all reported at once.

/// Substitutes variables in `text`; `lookup` reads the environment.
/// Comment lines are left alone so documentation may mention `${VAR}`.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            substitute_line(line, index + 1, lookup, &mut out, &mut errors);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn substitute_line(
    text: &str,
    line: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<String>,
) {
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
            errors.push(format!("line {line}: `${{` without a closing `}}`"));
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
                "line {line}: `${{{body}}}` is not a valid variable reference"
            ));
            continue;
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => errors.push(format!(
                "line {line}: environment variable {name} is not set; set it or write ${{{name}:-default}}"
            )),
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(
            substitute("x=${A} y=${B:-b} z=$$A w=$5", &env).unwrap(),
            "x=alpha y=b z=$A w=$5"
        );
        assert_eq!(substitute("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(
            substitute("  # see ${NOPE}\n", &env).unwrap(),
            "  # see ${NOPE}\n"
        );
    }

    #[test]
    fn missing_variables_all_reported() {
        let errs = substitute("a=${X}\nb=${Y}\nc=${1bad}", &env).unwrap_err();
        assert_eq!(errs.len(), 3);
        assert!(errs[1].starts_with("line 2"));
        assert!(errs[0].contains("X is not set"));
    }
}
