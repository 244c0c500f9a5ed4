//! A backup larger than one S3 part goes through a real multipart upload
//! (create, several parts, complete) and restores byte for byte: the
//! regression test for a store answering CompleteMultipartUpload unlike S3.

use std::process::Command;

use steward_tests::backup_env::{random_file, sha256_file, BackupEnv};
use steward_tests::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use steward_tests::steward_bin;

#[test]
fn multi_part_upload_completes_and_restores_identically() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Random bytes do not compress: 12 MiB stays 3 parts of the minimum
    // 5 MiB part size after zstd.
    random_file(&data.join("big.bin"), 12 * 1024 * 1024, 7);
    let s3 = S3Server::start().expect("start moto");
    // The DEFAULT checksum setting (no `checksum` key): uploads carry CRC32
    // request checksums, so the stored object has a composite (checksum of
    // the parts' checksums) CRC32, which moto returns without S3's `-N`
    // suffix; the SDK's response validation then compared it with the CRC32
    // of the whole body and failed the download with a streaming error.
    s3.create_bucket("backups", false).unwrap();
    env.write_config(&format!(
        "[backup.targets.offsite]\nkind = \"s3\"\nbucket = \"backups\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\npart_size_bytes = 5242880\n\n\
         [backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\ntargets = [\"offsite\"]\n",
        s3.endpoint(),
        data.display()
    ));
    let (code, report, stderr) = env.run_job("files");
    assert_eq!(code, 0, "{stderr}\n{report:#}\nmoto log:\n{}", s3.log());
    assert!(
        s3.list_uploads("backups").unwrap().is_empty(),
        "no multipart upload may be left open"
    );
    // Request checksums stay on by default: the stored data object has one.
    let keys = s3.list_keys("backups", "steward/").unwrap();
    let object = keys
        .iter()
        .find(|k| k.ends_with(".age"))
        .unwrap_or_else(|| panic!("no stored object in {keys:?}"));
    let head = s3.head_with_checksum("backups", object).unwrap();
    assert!(
        head.to_ascii_lowercase().contains("x-amz-checksum-crc32:"),
        "the multi-part object was uploaded without a CRC32 checksum:\n{head}"
    );

    let out_dir = env.dir.path().join("restored");
    let out = Command::new(steward_bin())
        .args(["restore", "files", "latest", "--to"])
        .arg(&out_dir)
        .arg("--identity")
        .arg(&env.key)
        .arg("--config")
        .arg(&env.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: Vec<_> = walk(&out_dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "big.bin"))
        .collect();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(
        sha256_file(&restored[0]),
        sha256_file(&data.join("big.bin"))
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn missing_bucket_is_one_clear_line_not_the_sdk_dump() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    let s3 = S3Server::start().expect("start moto");
    env.write_config(&format!(
        "[backup.targets.offsite]\nkind = \"s3\"\nbucket = \"no-such-bucket\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\n\n\
         [backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\ntargets = [\"offsite\"]\n",
        s3.endpoint(),
        data.display()
    ));
    let (code, _report, stderr) = env.run_job("files");
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");
    assert!(
        stderr.contains("no-such-bucket"),
        "names the bucket: {stderr}"
    );
    for dump in ["ErrorMetadata", "raw: Response", "SdkBody"] {
        assert!(
            !stderr.contains(dump),
            "raw SDK dump in the error: {stderr}"
        );
    }
}
