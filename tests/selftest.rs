//! `ctsentinel selftest`: passes on the shipped model, and fails loudly (exit 1, the failing
//! check named) when the model or its known answers are not what was shipped.

mod common;

use std::path::Path;

use serde_json::Value;

fn selftest(models: &Path) -> (i32, Value) {
    let out = common::ctsentinel()
        .args(["selftest", "--json", "--threads", "2", "--model"])
        .arg(models)
        .output()
        .unwrap();
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn copy_models(to: &Path) {
    let s = common::shipped();
    for f in [&s.card, &s.model, &s.kat] {
        std::fs::copy(common::models().join(f), to.join(f)).unwrap();
    }
}

#[test]
fn selftest_passes_on_the_shipped_model() {
    let (code, v) = selftest(&common::models());
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["passed"], true);
    for name in ["selection_kernel", "model_integrity", "known_answers"] {
        assert_eq!(check(&v, name)["passed"], true, "{name}: {v:#}");
    }
    assert_eq!(v["notice"], "research use only, not a diagnosis");
}

#[test]
fn selftest_fails_when_the_known_answers_disagree() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let kat_path = dir.path().join(common::shipped().kat);
    let mut kat: Value = serde_json::from_str(&std::fs::read_to_string(&kat_path).unwrap()).unwrap();
    // Claim the most COVID-like phantom was clearly normal.
    let last = kat["p_covid"].as_array().unwrap().len() - 1;
    kat["p_covid"][last][1] = 0.01.into();
    std::fs::write(&kat_path, kat.to_string()).unwrap();
    let (code, v) = selftest(dir.path());
    assert_eq!(code, 1);
    assert_eq!(v["passed"], false);
    assert_eq!(check(&v, "known_answers")["passed"], false);
    assert!(
        check(&v, "known_answers")["detail"]
            .as_str()
            .unwrap()
            .contains("expected 0.0100"),
        "{v:#}"
    );
    assert_eq!(check(&v, "model_integrity")["passed"], true);
}

#[test]
fn selftest_fails_on_a_tampered_model_and_still_reports_every_check() {
    let dir = tempfile::tempdir().unwrap();
    copy_models(dir.path());
    let model = dir.path().join(common::shipped().model);
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let (code, v) = selftest(dir.path());
    assert_eq!(code, 1);
    assert_eq!(check(&v, "model_integrity")["passed"], false);
    assert!(check(&v, "model_integrity")["detail"]
        .as_str()
        .unwrap()
        .contains("SHA-256"));
    assert_eq!(check(&v, "known_answers")["passed"], false);
    assert_eq!(check(&v, "selection_kernel")["passed"], true);
    assert!(v["model"].is_null(), "no identity claimed for a refused model");
}

#[test]
fn configured_selftest_checks_folders_and_fails_on_a_missing_drop_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        dir.path().join("generic-x86_64.toml"),
        std::fs::read(common::repo().join("boards/generic-x86_64.toml")).unwrap(),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    let text = format!(
        "board = \"generic-x86_64\"\ndrop = [\"{d}/drop\"]\nstate = \"{d}/state\"\nmodels = \"{m}\"\nmin_free_mb = 1\n",
        d = dir.path().display(),
        m = common::models().display()
    );
    std::fs::write(&cfg, &text).unwrap();
    let run = |cfg: &Path| {
        let out = common::ctsentinel()
            .args(["selftest", "--json", "--config"])
            .arg(cfg)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    let (code, v) = run(&cfg);
    assert_eq!(code, 0, "{v:#}");
    for name in ["drop_folders", "state_folder", "free_disk", "display", "known_answers"] {
        assert_eq!(check(&v, name)["passed"], true, "{name}: {v:#}");
    }
    std::fs::remove_dir(dir.path().join("drop")).unwrap();
    let (code, v) = run(&cfg);
    assert_eq!(code, 1);
    assert_eq!(check(&v, "drop_folders")["passed"], false);
    assert!(check(&v, "drop_folders")["detail"].as_str().unwrap().contains("drop"));
}

#[test]
fn error_messages_name_each_cause_once() {
    // The typed errors print their source and anyhow's `{:#}` printed it again ("No such file
    // or directory (os error 2): No such file or directory (os error 2)"), seen when a
    // configuration named a board that is not installed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ctsentinel.toml");
    std::fs::write(&cfg, "board = \"nosuchboard\"\ndrop = [\"/tmp\"]\nstate = \"/tmp\"\n").unwrap();
    let out = common::ctsentinel()
        .args(["selftest", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nosuchboard.toml"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}
