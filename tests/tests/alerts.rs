//! alerts/: the rule files pass `promtool check rules`, every alert has a
//! `for`, a severity, a summary, a description and a runbook section, its
//! promtool unit tests cover it firing and not firing, the committed files
//! are `alerts/render`'s output for the default runbook link and a render
//! for another runbook passes promtool too, and the Alertmanager example
//! passes `amtool check-config` and routes as documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("alerts")
}

/// Where the committed rules link: the runbook the Debian package installs
/// next to them (alerts/README.md says why).
const DEFAULT_RUNBOOK: &str = "file:///usr/share/steward/alerts/RUNBOOK.md#";

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
    alerts_in(&alerts_dir())
}

fn alerts_in(dir: &Path) -> Vec<Alert> {
    let mut out = Vec::new();
    for path in files(dir, ".rules.yml") {
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
    check_rules(&alerts_dir());
}

fn check_rules(dir: &Path) {
    let rule_files: Vec<String> = files(dir, ".rules.yml")
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(rule_files.len() >= 8, "{rule_files:?}");
    let mut args = vec!["check", "rules"];
    args.extend(rule_files.iter().map(String::as_str));
    let (ok, out) = run("promtool", "prometheus", &args, dir);
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(!out.contains("WARNING"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    test_rules(&alerts_dir());
}

fn test_rules(alerts: &Path) {
    let dir = alerts.join("tests");
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
        assert_eq!(
            url,
            format!("{DEFAULT_RUNBOOK}{}", a.name.to_lowercase()),
            "{what}: runbook_url must point at the installed RUNBOOK.md (run alerts/render --in-place)"
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

/// Runs `alerts/render` with `args`; (exit status success, its output).
fn render(args: &[&str]) -> (bool, String) {
    let script = alerts_dir().join("render");
    let mut all = vec![script.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    run("python3", "python3", &all, &alerts_dir())
}

/// The files a render writes, by path relative to the alerts directory.
fn rendered_files(dir: &Path) -> BTreeMap<String, String> {
    let mut paths = files(dir, ".rules.yml");
    paths.extend(files(&dir.join("tests"), ".test.yml"));
    paths.push(dir.join("RUNBOOK.md"));
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, text)
        })
        .collect()
}

/// Every runbook_url value in `text` (rule annotations and promtool
/// `exp_annotations` alike), with the line it is on.
fn runbook_urls(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let value = l.trim_start().strip_prefix("runbook_url:")?;
            Some((i + 1, value.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// The alert each runbook_url line belongs to: the nearest `alert:` or
/// `alertname:` line above it.
fn alert_above(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix("alert:")
                .or_else(|| l.strip_prefix("alertname:"))
        })
        .last()
        .unwrap_or_else(|| panic!("no alert above line {line}"))
        .trim()
        .to_string()
}

#[test]
fn committed_rules_and_tests_equal_a_fresh_render() {
    let out = tempfile::tempdir().unwrap();
    let (ok, msg) = render(&["--out", out.path().to_str().unwrap()]);
    assert!(ok, "alerts/render failed:\n{msg}");
    let committed = rendered_files(&alerts_dir());
    let fresh = rendered_files(out.path());
    assert_eq!(
        committed.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>()
    );
    let stale: Vec<&String> = committed
        .iter()
        .filter(|(rel, text)| fresh[*rel] != **text)
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        stale.is_empty(),
        "{stale:?} differ from alerts/render's output: run alerts/render --in-place"
    );
    // The promtool tests expect the very links the rules carry.
    let mut links = 0;
    for (rel, text) in &committed {
        for (line, url) in runbook_urls(text) {
            let alert = alert_above(text, line);
            assert_eq!(
                url,
                format!("{DEFAULT_RUNBOOK}{}", alert.to_lowercase()),
                "{rel}:{line}"
            );
            links += 1;
        }
    }
    assert!(links >= 70, "{links} runbook links");
}

#[test]
fn rules_rendered_for_a_wiki_pass_promtool_and_change_only_runbook_links() {
    let pattern = "https://wiki.example.com/ops/steward%20alerts#%s";
    let out = tempfile::tempdir().unwrap();
    let (ok, msg) = render(&[
        "--runbook-url-pattern",
        pattern,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(ok, "alerts/render failed:\n{msg}");
    check_rules(out.path());
    test_rules(out.path());

    let rendered = alerts_in(out.path());
    assert_eq!(rendered.len(), alerts().len());
    for a in &rendered {
        assert_eq!(
            a.rule["annotations"]["runbook_url"].as_str(),
            Some(pattern.replace("%s", &a.name.to_lowercase()).as_str()),
            "{} ({})",
            a.name,
            a.file
        );
    }
    // Line for line, only runbook_url values differ: comments and layout
    // survive (no YAML round-trip).
    let committed = rendered_files(&alerts_dir());
    for (rel, text) in rendered_files(out.path()) {
        let before: Vec<&str> = committed[&rel].lines().collect();
        let after: Vec<&str> = text.lines().collect();
        assert_eq!(before.len(), after.len(), "{rel}");
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if b.trim_start().starts_with("runbook_url:") {
                let alert = alert_above(&text, i + 1).to_lowercase();
                let indent = &b[..b.len() - b.trim_start().len()];
                let expected =
                    format!("{indent}runbook_url: \"{}\"", pattern.replace("%s", &alert));
                assert_eq!(*a, expected, "{rel}:{}", i + 1);
            } else {
                assert_eq!(b, a, "{rel}:{}", i + 1);
            }
        }
    }
}

#[test]
fn runbook_base_links_to_sections_of_that_document() {
    let out = tempfile::tempdir().unwrap();
    let base = "https://git.example.com/ops/monitoring/blob/main/steward/RUNBOOK.md";
    let (ok, msg) = render(&[
        "--runbook-base",
        base,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(ok, "alerts/render failed:\n{msg}");
    let host = std::fs::read_to_string(out.path().join("host.rules.yml")).unwrap();
    assert!(
        host.contains(&format!("runbook_url: \"{base}#hostdiskusagehigh\"")),
        "{host}"
    );
    // The runbook goes along, so a rendered directory is complete.
    assert_eq!(
        std::fs::read(out.path().join("RUNBOOK.md")).unwrap(),
        std::fs::read(alerts_dir().join("RUNBOOK.md")).unwrap()
    );
}

#[test]
fn render_refuses_dead_links_and_overwriting_its_source() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("rendered");
    let target = target.to_str().unwrap();
    let source = alerts_dir();
    let source = source.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--runbook-url-pattern", "https://wiki.example.com/steward"],
            "must contain `%s` exactly once",
        ),
        (
            &["--runbook-url-pattern", "RUNBOOK.md#%s"],
            "is not an absolute URL",
        ),
        (
            &["--runbook-url-pattern", "https://wiki.example.com/a b#%s"],
            "percent-encode",
        ),
        (
            &["--runbook-url-pattern", "https://w/{{ $labels.job }}#%s"],
            "template",
        ),
        (
            &["--runbook-base", "https://git.example.com/steward/alerts/"],
            "URL of the runbook document",
        ),
        (&["--runbook-base", "https://w/x.md#top"], "fragment"),
    ];
    for (args, why) in cases {
        let mut all = args.to_vec();
        all.extend(["--out", target]);
        let (ok, msg) = render(&all);
        assert!(!ok, "{args:?} was accepted");
        assert!(msg.contains(why), "{args:?}: {msg}");
        assert!(!Path::new(target).exists(), "{args:?} wrote files");
    }
    let before = rendered_files(&alerts_dir());
    let (ok, msg) = render(&["--runbook-base", "https://w/RUNBOOK.md", "--out", source]);
    assert!(!ok && msg.contains("--in-place"), "{msg}");
    assert_eq!(before, rendered_files(&alerts_dir()));
}

/// A copy of alerts/ with one rule file replaced, to feed the render lines
/// it must refuse.
fn source_with(rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in rendered_files(&alerts_dir()) {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.path().join("extra.rules.yml"), rules).unwrap();
    dir
}

#[test]
fn render_refuses_links_it_cannot_rewrite_and_leaves_the_source_intact() {
    let rule = |name: &str, annotations: &str| {
        format!(
            "groups:\n  - name: extra\n    rules:\n      - alert: {name}\n        expr: up == 0\n        for: 5m\n        annotations:\n{annotations}"
        )
    };
    let cases = [
        (
            rule("HostHighLoad", "          {runbook_url: \"x\"}\n"),
            "extra.rules.yml:8: write runbook_url on its own line",
        ),
        (
            rule("HostHighLoad", "          runbook_url: 'x'\n"),
            "extra.rules.yml:8: write runbook_url on its own line",
        ),
        (
            rule("NoSuchAlert", "          runbook_url: \"x\"\n"),
            "extra.rules.yml:8: RUNBOOK.md has no section `## NoSuchAlert`",
        ),
        (
            "groups:\n  - name: extra\n    rules:\n      - record: x\n        expr: up\n        annotations:\n          runbook_url: \"x\"\n"
                .to_string(),
            "extra.rules.yml:7: runbook_url outside an alert",
        ),
    ];
    for (rules, why) in cases {
        let dir = source_with(&rules);
        let before = rendered_files(dir.path());
        let (ok, msg) = render(&[
            "--source",
            dir.path().to_str().unwrap(),
            "--runbook-base",
            "https://w/RUNBOOK.md",
            "--in-place",
        ]);
        assert!(!ok, "{rules} was accepted");
        assert!(msg.contains(why), "{rules}: {msg}");
        assert_eq!(
            before,
            rendered_files(dir.path()),
            "{rules}: source changed"
        );
    }
}

#[test]
fn a_rendered_directory_renders_again() {
    // In-place renders for one wiki, then back to the default: the anchors
    // come from the alert names, not from the links being replaced.
    let dir = source_with("groups: []\n");
    let src = dir.path().to_str().unwrap();
    for args in [
        &["--runbook-url-pattern", "https://wiki.example.com/%s"][..],
        &[][..],
    ] {
        let mut all = vec!["--source", src, "--in-place"];
        all.extend_from_slice(args);
        let (ok, msg) = render(&all);
        assert!(ok, "{args:?}: {msg}");
    }
    let mut again = rendered_files(dir.path());
    again.remove("extra.rules.yml");
    assert_eq!(again, rendered_files(&alerts_dir()));
}
