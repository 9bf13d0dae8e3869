//! Loading `[debug]`, the delivery debugger's settings: defaults applied, bad values named.

use super::errors::ConfigError;
use super::schema::{DebugFile, MAX_DEBUG_BODY_BYTES};
use crate::domain::{CaptureMode, DebugSettings};
use std::path::Path;

/// The `[debug]` settings of `file`, defaults for what it leaves out; errors name the key.
pub(super) fn debug_settings(
    file: &Path,
    parsed: DebugFile,
    errors: &mut Vec<ConfigError>,
) -> DebugSettings {
    let defaults = DebugSettings::default();
    let mut error = |key: &str, message: String| {
        errors.push(ConfigError {
            file: file.to_path_buf(),
            key: format!("debug.{key}"),
            message,
        })
    };
    let capture = match parsed.capture.as_deref() {
        None => defaults.capture,
        Some(text) => CaptureMode::parse(text).unwrap_or_else(|| {
            error(
                "capture",
                format!("unknown capture {text:?}: use \"off\", \"failed\", \"sample\" or \"all\""),
            );
            defaults.capture
        }),
    };
    let max_body_bytes = match parsed.max_body_bytes {
        Some(n) if n > MAX_DEBUG_BODY_BYTES => {
            error(
                "max_body_bytes",
                format!("{n} is more than the {MAX_DEBUG_BODY_BYTES} bytes a body may keep"),
            );
            defaults.max_body_bytes
        }
        Some(n) => n as usize,
        None => defaults.max_body_bytes,
    };
    DebugSettings {
        capture,
        max_body_bytes,
        keep_debug_runs: parsed.keep_debug_runs.unwrap_or(defaults.keep_debug_runs),
        keep_debug_days: parsed.keep_debug_days.unwrap_or(defaults.keep_debug_days),
        max_bytes: parsed.max_bytes.unwrap_or(defaults.max_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<DebugSettings, Vec<ConfigError>> {
        let parsed: DebugFile = toml::from_str(text).map_err(|_| Vec::new())?;
        let mut errors = Vec::new();
        let settings = debug_settings(Path::new("backflow.toml"), parsed, &mut errors);
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }

    #[test]
    fn defaults_values_and_errors_naming_the_key() {
        assert_eq!(load("").unwrap(), DebugSettings::default());
        let s = load("capture = \"all\"\nkeep_debug_runs = 1\nmax_body_bytes = 10").unwrap();
        assert_eq!(
            (s.capture, s.keep_debug_runs, s.max_body_bytes),
            (CaptureMode::All, 1, 10)
        );
        let errors = load("capture = \"most\"").unwrap_err();
        assert_eq!(errors[0].key, "debug.capture");
        assert!(
            errors[0].message.contains("\"most\""),
            "{}",
            errors[0].message
        );
        let errors = load("max_body_bytes = 99999999").unwrap_err();
        assert_eq!(errors[0].key, "debug.max_body_bytes");
        assert!(toml::from_str::<DebugFile>("captur = \"all\"").is_err());
    }
}
