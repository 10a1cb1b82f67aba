//! Environment references in the paths a configuration gives (`sources[].path`,
//! `state_dir`): `%NAME%` as Windows writes them (`%LOCALAPPDATA%\MicroSIP\…`),
//! `${env:NAME}`, and a leading `~` for the home folder.
//!
//! Takes the path as written and hands back the expanded one; an unset (or empty)
//! variable is an error naming it, never an empty piece of a path. One pass: a value
//! is not expanded again. `%` not followed by a name and a closing `%` (`50%.txt`,
//! `a%20b`) stays as it is: a name starts with a letter or `_` and holds letters,
//! digits, `_`, `(` and `)` (`%ProgramFiles(x86)%`). Paths that are not UTF-8 are
//! left alone. (Secrets in rules, `${env:…}`/`${file:…}` in URLs and headers, are the
//! rules' own business: `rules::template`.)

use std::path::{Path, PathBuf};

/// A path that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("{written}: environment variable {name} is not set")]
    Unset { written: String, name: String },
    #[error("{0}: no home folder for `~` (HOME, or USERPROFILE on Windows, is not set)")]
    NoHome(String),
    #[error("{written}: `${{{reference}}}`: expected `${{env:NAME}}`")]
    Reference { written: String, reference: String },
    #[error("{0}: unclosed `${{`")]
    Unclosed(String),
}

/// `path` with its references replaced by the environment's values.
pub fn path(path: &Path) -> Result<PathBuf, ExpandError> {
    path_with(path, &|name| std::env::var(name).ok())
}

/// [`path`] with the variables from `var` (tests pass their own).
pub fn path_with(path: &Path, var: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, ExpandError> {
    let Some(written) = path.to_str() else {
        return Ok(path.to_owned());
    };
    let value = |name: &str| {
        var(name).filter(|v| !v.is_empty()).ok_or_else(|| ExpandError::Unset {
            written: written.to_owned(),
            name: name.to_owned(),
        })
    };
    let mut out = String::with_capacity(written.len());
    let mut rest = written;
    if let Some(after) = rest
        .strip_prefix('~')
        .filter(|a| a.is_empty() || a.starts_with(['/', '\\']))
    {
        let home = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
        let home = value(home)
            .or_else(|_| value("HOME"))
            .map_err(|_| ExpandError::NoHome(written.to_owned()))?;
        out.push_str(&home);
        rest = after;
    }
    while let Some(start) = rest.find(['%', '$']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| ExpandError::Unclosed(written.to_owned()))?;
            let reference = &inner[..end];
            match reference.strip_prefix("env:") {
                Some(name) if !name.is_empty() => out.push_str(&value(name)?),
                _ => {
                    return Err(ExpandError::Reference {
                        written: written.to_owned(),
                        reference: reference.to_owned(),
                    });
                }
            }
            rest = &inner[end + 1..];
        } else if let Some(name) = percent_name(tail) {
            out.push_str(&value(name)?);
            rest = &tail[name.len() + 2..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

/// The `NAME` of a `%NAME%` at the start of `text`.
fn percent_name(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('%')?;
    let end = inner.find('%')?;
    let name = &inner[..end];
    let first = name.chars().next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '(' | ')'));
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str) -> Result<String, String> {
        let var = |name: &str| match name {
            "LOCALAPPDATA" => Some(r"C:\Users\me\AppData\Local".to_owned()),
            "ProgramFiles(x86)" => Some(r"C:\Program Files (x86)".to_owned()),
            "HOME" | "USERPROFILE" => Some("/home/me".to_owned()),
            "TRICK" => Some("%LOCALAPPDATA%".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        path_with(Path::new(text), &var)
            .map(|p| p.to_str().unwrap().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn windows_and_env_references_and_home_are_expanded() {
        assert_eq!(
            expand(r"%LOCALAPPDATA%\MicroSIP\MicroSIP_log.txt").unwrap(),
            r"C:\Users\me\AppData\Local\MicroSIP\MicroSIP_log.txt"
        );
        assert_eq!(
            expand("${env:LOCALAPPDATA}/MicroSIP").unwrap(),
            r"C:\Users\me\AppData\Local/MicroSIP"
        );
        assert_eq!(expand("%ProgramFiles(x86)%/x").unwrap(), r"C:\Program Files (x86)/x");
        assert_eq!(expand("~/phone.log").unwrap(), "/home/me/phone.log");
        assert_eq!(expand("~").unwrap(), "/home/me");
        assert_eq!(expand("${env:TRICK}").unwrap(), "%LOCALAPPDATA%", "one pass only");
    }

    #[test]
    fn text_that_is_no_reference_stays() {
        for text in [
            "logs/a%20b%20c.txt",
            "50%.txt",
            "%",
            "%%",
            "a$b",
            "~user/x",
            "x/~/y",
            "$HOME/x",
        ] {
            assert_eq!(expand(text).unwrap(), text);
        }
    }

    #[test]
    fn unset_variables_and_bad_references_are_named() {
        let error = expand(r"%APPDATA%\MicroSIP\microsip.ini").unwrap_err();
        assert_eq!(
            error,
            r"%APPDATA%\MicroSIP\microsip.ini: environment variable APPDATA is not set"
        );
        assert!(expand("${env:EMPTY}/x").unwrap_err().contains("EMPTY is not set"));
        assert!(expand("${file:x}").unwrap_err().contains("expected `${env:NAME}`"));
        assert!(expand("${env:X").unwrap_err().contains("unclosed"));
    }
}
