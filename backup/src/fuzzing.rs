//! Harnesses over what the backup crate reads from a bucket: object keys
//! from a listing and the manifests behind them. One per fuzz target in
//! `fuzz/`; here so the fuzz targets and the seed regression test below run
//! the same code. Built for tests and with the `fuzzing` feature only.

use crate::layout;
use crate::manifest::Manifest;
use crate::restore::tables;

/// A harness's name (its fuzz target and seed folder) and the harness,
/// which takes any bytes and says whether they made sense; only a panic is
/// a finding (the same shape as `steward_exporters::fuzzing::Harness`).
pub type Harness = (&'static str, fn(&[u8]) -> bool);

pub const HARNESSES: [Harness; 2] = [
    ("backup_manifest", backup_manifest),
    ("bucket_key", bucket_key),
];

/// A `manifest.json` as `backup list`, restore and drills read it: parsed,
/// summed, its keys built and split again, its table statistics compared
/// with a restore that found every table, and written back unchanged.
pub fn backup_manifest(data: &[u8]) -> bool {
    let Ok(manifest) = Manifest::from_json(data, "fuzz/manifest.json") else {
        return false;
    };
    let _ = (manifest.plaintext_bytes(), manifest.stored_bytes());
    for object in &manifest.objects {
        let key = manifest.object_key(object);
        if let Some(parts) = layout::parse_key(&key) {
            assert_eq!(
                layout::object_key(&parts.host, &parts.job, &parts.snapshot_id, &parts.name),
                key
            );
        }
    }
    let _ = layout::parse_key(&manifest.key());
    for database in &manifest.databases {
        let restored: Vec<String> = database.tables.iter().map(|t| t.name.clone()).collect();
        let _ = tables::compare_with_manifest(&restored, Some(database), |asked| {
            Ok(asked.iter().enumerate().map(|(i, t)| (i, t.rows)).collect())
        });
    }
    let written = Manifest::from_json(&manifest.to_json(), "fuzz/manifest.json");
    assert_eq!(
        written.ok().as_ref(),
        Some(&manifest),
        "a manifest reads back as written"
    );
    true
}

/// A key from a bucket listing: split into host, job, snapshot and name,
/// and joined back to the same key when it splits.
pub fn bucket_key(data: &[u8]) -> bool {
    let Ok(key) = std::str::from_utf8(data) else {
        return false;
    };
    let Some(parts) = layout::parse_key(key) else {
        return false;
    };
    let _ = parts.is_manifest();
    assert_eq!(
        layout::object_key(&parts.host, &parts.job, &parts.snapshot_id, &parts.name),
        key,
        "a key splits and joins back"
    );
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_fuzz_seeds_parse() {
        steward_exporters::fuzzing::check_seeds(&super::HARNESSES);
    }
}
