//! alerts/: the rule files pass `promtool check rules`, every alert has a
//! `for`, a severity, a summary, a description and a runbook section, its
//! promtool unit tests cover it firing and not firing, and the Alertmanager
//! example passes `amtool check-config` and routes as documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("alerts")
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// Runs a tool; a missing tool fails the test with the package to install.
fn run(tool: &str, package: &str, args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install the Debian package {package} (scripts/apt-packages.txt)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[derive(Debug)]
struct Alert {
    name: String,
    severity: String,
    file: String,
    rule: serde_yaml::Value,
}

fn alerts() -> Vec<Alert> {
    let mut out = Vec::new();
    for path in files(&alerts_dir(), ".rules.yml") {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for group in doc["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                let Some(name) = rule["alert"].as_str() else {
                    continue;
                };
                out.push(Alert {
                    name: name.to_string(),
                    severity: rule["labels"]["severity"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    file: path.file_name().unwrap().to_string_lossy().into_owned(),
                    rule: rule.clone(),
                });
            }
        }
    }
    out
}

#[test]
fn promtool_check_rules_is_clean() {
    let dir = alerts_dir();
    let rule_files: Vec<String> = files(&dir, ".rules.yml")
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(rule_files.len() >= 8, "{rule_files:?}");
    let mut args = vec!["check", "rules"];
    args.extend(rule_files.iter().map(String::as_str));
    let (ok, out) = run("promtool", "prometheus", &args, &dir);
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(!out.contains("WARNING"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let dir = alerts_dir().join("tests");
    let tests: Vec<String> = files(&dir, ".test.yml")
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = run("promtool", "prometheus", &args, &dir);
    assert!(ok, "promtool test rules failed:\n{out}");
    assert_eq!(out.matches("SUCCESS").count(), tests.len(), "{out}");
}

#[test]
fn every_alert_has_for_severity_text_and_a_runbook_section() {
    let runbook = std::fs::read_to_string(alerts_dir().join("RUNBOOK.md")).unwrap();
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let all = alerts();
    assert!(all.len() >= 30, "{} alerts", all.len());
    for a in &all {
        let r = &a.rule;
        let what = format!("{} ({}, {})", a.name, a.severity, a.file);
        let for_ = r["for"].as_str().unwrap_or("");
        assert!(
            !for_.is_empty() && for_ != "0s" && for_ != "0m",
            "{what}: every alert needs a `for`"
        );
        assert!(
            matches!(a.severity.as_str(), "critical" | "warning"),
            "{what}: severity must be critical or warning"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                r["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{what}: annotation {key} missing"
            );
        }
        let url = r["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url.rsplit_once('#').map(|x| x.1).unwrap_or("");
        assert!(
            url.contains("alerts/RUNBOOK.md#") && anchor == a.name.to_lowercase(),
            "{what}: runbook_url must point at RUNBOOK.md#{}",
            a.name.to_lowercase()
        );
        assert!(
            sections.contains(anchor),
            "{what}: RUNBOOK.md has no section `## {}`",
            a.name
        );
        // Selectors must not be tied to one scrape job name (node_exporter
        // #941, #2426): group by job instead.
        let expr = r["expr"].as_str().unwrap_or("");
        assert!(
            !expr.contains("job=") && !expr.contains("job =~") && !expr.contains("job=~"),
            "{what}: hard-coded job selector in {expr}"
        );
    }
    // Every runbook section belongs to an alert (no stale sections).
    let names: BTreeSet<String> = all.iter().map(|a| a.name.to_lowercase()).collect();
    for s in &sections {
        assert!(names.contains(s), "RUNBOOK.md section {s} has no alert");
    }
}

/// For every (alert, severity): a unit test where it fires, and for every
/// alert a test where it is expected not to fire.
#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let dir = alerts_dir().join("tests");
    let mut firing: BTreeSet<(String, String)> = BTreeSet::new();
    let mut silent: BTreeSet<String> = BTreeSet::new();
    let mut covered_files: BTreeSet<String> = BTreeSet::new();
    for path in files(&dir, ".test.yml") {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for f in doc["rule_files"].as_sequence().unwrap() {
            let f = f.as_str().unwrap();
            covered_files.insert(f.rsplit('/').next().unwrap().to_string());
        }
        for test in doc["tests"].as_sequence().unwrap() {
            for case in test["alert_rule_test"].as_sequence().unwrap_or(&Vec::new()) {
                let name = case["alertname"].as_str().unwrap().to_string();
                let exp = case["exp_alerts"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default();
                if exp.is_empty() {
                    silent.insert(name.clone());
                }
                for e in exp {
                    let sev = e["exp_labels"]["severity"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    // promtool compares annotations too: a firing case
                    // without them would not check the text users read.
                    assert!(
                        e["exp_annotations"]["description"].as_str().is_some(),
                        "{}: {name} firing case without exp_annotations",
                        path.display()
                    );
                    firing.insert((name.clone(), sev));
                }
            }
        }
    }
    let mut missing = Vec::new();
    for a in alerts() {
        if !firing.contains(&(a.name.clone(), a.severity.clone())) {
            missing.push(format!("{} ({}) never fires in a test", a.name, a.severity));
        }
        if !silent.contains(&a.name) {
            missing.push(format!("{} has no not-firing test", a.name));
        }
        if !covered_files.contains(&a.file) {
            missing.push(format!("{} is in no test's rule_files", a.file));
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn alertmanager_example_passes_amtool_and_routes_by_severity() {
    let dir = alerts_dir();
    let (ok, out) = run(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", "alertmanager.example.yml"],
        &dir,
    );
    assert!(ok, "amtool check-config failed:\n{out}");
    assert!(out.contains("2 inhibit rules"), "{out}");
    let routes: BTreeMap<&str, &str> = [
        ("severity=critical", "pager,chat"),
        ("severity=warning", "chat"),
    ]
    .into_iter()
    .collect();
    for (labels, receivers) in routes {
        let (ok, out) = run(
            "amtool",
            "prometheus-alertmanager",
            &[
                "config",
                "routes",
                "test",
                "--config.file=alertmanager.example.yml",
                &format!("--verify.receivers={receivers}"),
                "alertname=HostDiskUsageHigh",
                labels,
            ],
            &dir,
        );
        assert!(ok, "{labels} should route to {receivers}:\n{out}");
    }
}
