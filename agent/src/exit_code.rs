//! Exit codes beyond success (0) and failure (1) that scripts can rely on.

/// A configuration or usage problem (as `config check` uses): the
/// operator must fix the file or the flags; retrying will not help.
pub const EXIT_CONFIG: u8 = 2;
