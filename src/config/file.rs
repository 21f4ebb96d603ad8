//! The `KEY=VALUE` syntax systemd's `EnvironmentFile=` reads, so one file serves both the unit and the daemon.
//!
//! Supported: blank lines, `#`/`;` comments, whitespace around key and value, single- or double-quoted values
//! (double quotes understand `\"`, `\\`, `\n`, `\t`), and a trailing backslash continuing a line. Every malformed
//! line is reported with its number; parsing goes on so all problems are listed at once.

/// One assignment, with the 1-based line it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses the whole file text; returns the assignments and a message for every line that is not one.
pub fn parse(text: &str) -> (Vec<Assignment>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((idx, raw)) = lines.next() {
        let line_no = idx + 1;
        let mut logical = raw.to_string();
        // Continuation: a backslash at the very end joins the next line (as systemd does).
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next),
                None => break,
            }
        }
        let trimmed = logical.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            problems.push(format!("line {line_no}: expected KEY=VALUE, found {:?}", shorten(trimmed)));
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(format!("line {line_no}: {:?} is not a valid variable name", shorten(key)));
            continue;
        }
        match unquote(value.trim()) {
            Ok(value) => out.push(Assignment { key: key.to_string(), value, line: line_no }),
            Err(why) => problems.push(format!("line {line_no}: {key}: {why}")),
        }
    }
    (out, problems)
}

fn unquote(value: &str) -> Result<String, &'static str> {
    let Some(first) = value.chars().next() else { return Ok(String::new()) };
    if first != '"' && first != '\'' {
        return Ok(value.to_string());
    }
    let body = &value[1..];
    let Some(end) = body.rfind(first) else { return Err("unterminated quote") };
    if !body[end + 1..].trim().is_empty() {
        return Err("text after the closing quote");
    }
    let inner = &body[..end];
    if first == '\'' {
        return Ok(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

/// Keeps messages short and free of long (possibly secret) values.
fn shorten(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_quotes_and_continuations() {
        let text =
            "# comment\n; also\n\nXYTE_ENV = staging \nXYTE_API_KEY=\"a b\\\"c\"\nXYTE_X='lit\\n'\nXYTE_Y=one\\\ntwo\n";
        let (got, problems) = parse(text);
        assert!(problems.is_empty(), "{problems:?}");
        let pairs: Vec<_> = got.iter().map(|a| (a.key.as_str(), a.value.as_str(), a.line)).collect();
        assert_eq!(
            pairs,
            vec![
                ("XYTE_ENV", "staging", 4),
                ("XYTE_API_KEY", "a b\"c", 5),
                ("XYTE_X", "lit\\n", 6),
                ("XYTE_Y", "onetwo", 7)
            ]
        );
    }

    #[test]
    fn reports_every_bad_line() {
        let (got, problems) = parse("GOOD=1\nno equals here\n9-BAD=x\nQ=\"open\nR='x' y\n");
        assert_eq!(got.len(), 1);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("line 2:"));
        assert!(problems[1].starts_with("line 3:"));
        assert!(problems[2].contains("unterminated quote"));
        assert!(problems[3].contains("after the closing quote"));
    }
}
