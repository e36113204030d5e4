//! Structured logs through `tracing`: JSON lines for log collectors or text for people, filtered
//! by `RUST_LOG` when set, else by `--log-level`. Set up once at startup; nothing else in the
//! operator configures logging.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter.
        filter: String,
        /// The parse error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("installing the log subscriber: {0}")]
    Install(String),
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: &str) -> Result<(), Error> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|error| Error::Install(error.to_string()))
}

/// `RUST_LOG` if set and not empty, else `level`.
fn filter(level: &str) -> Result<EnvFilter, Error> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| level.to_owned());
    EnvFilter::try_new(&filter).map_err(|source| Error::Filter { filter, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_strings_parse_and_garbage_is_reported() {
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(filter("info,sessionizer_operator=debug").is_ok());
            assert!(matches!(filter("info,=[{"), Err(Error::Filter { .. })));
        }
    }
}
