//! The agent's own events that can become annotations: their names in
//! `grafana.events`, their tags, and their index in the counters.

/// The agent's own events that can become annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    Deploy,
    BackupFailure,
    BackupSuccess,
    Restore,
    Drill,
}

impl AnnotationKind {
    pub const ALL: [AnnotationKind; 5] = [
        AnnotationKind::Deploy,
        AnnotationKind::BackupFailure,
        AnnotationKind::BackupSuccess,
        AnnotationKind::Restore,
        AnnotationKind::Drill,
    ];

    /// The `kind` label of the self-metrics and the name in `grafana.events`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnotationKind::Deploy => "deploy",
            AnnotationKind::BackupFailure => "backup_failure",
            AnnotationKind::BackupSuccess => "backup_success",
            AnnotationKind::Restore => "restore",
            AnnotationKind::Drill => "drill",
        }
    }

    /// The kind a `grafana.events` entry names (deployments are not one).
    pub(super) fn from_event_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| *k != AnnotationKind::Deploy && k.as_str() == name)
    }

    /// Tags that let a dashboard select this kind (`deploy`, `backup`...).
    pub fn tags(self) -> &'static [&'static str] {
        match self {
            AnnotationKind::Deploy => &["deploy"],
            AnnotationKind::BackupFailure => &["backup", "failure"],
            AnnotationKind::BackupSuccess => &["backup"],
            AnnotationKind::Restore => &["restore"],
            AnnotationKind::Drill => &["drill"],
        }
    }

    /// The kind's slot in the counters.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}
