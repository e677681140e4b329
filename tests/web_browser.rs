//! The results page as a person uses it: the real appliance (`ctsentinel watch` with `[web]`)
//! processes a real series (16 slices of the shared COVID patient) and serves the page over TLS;
//! a real browser (Debian's headless chromium, through Selenium and Debian's chromedriver:
//! `tests/peers/browser_visit.py`) signs in with a wrong and then the right password, opens the
//! list and the result, and checks the verdict text and that the report sheet loaded, at a
//! desktop and a phone width. The browser trusts exactly the certificate the appliance made
//! (its public key's SHA-256, `--ignore-certificate-errors-spki-list`), the way an operator
//! trusts it after comparing the fingerprint on the bedside display. Screenshots are written to
//! `target/web-screens/` (the reviewed ones are in `tests/golden/web/`).
//!
//! Skips loudly without chromium, chromedriver or Selenium in `.venv` (`scripts/setup-browser.sh`
//! installs them); CI sets `CTSENTINEL_REQUIRE_BROWSER=1`, turning the skip into a failure.
//!
//! Run: `cargo test --test web_browser -- --nocapture`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const PASSWORD: &str = "radiology reading room";

fn browser_or_skip() -> Option<PathBuf> {
    let have = |p: &str| Path::new(p).exists();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let py = common::repo().join(".venv/bin/python");
    let selenium = std::process::Command::new(&py)
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    if have(&chromium) && have(&driver) && selenium {
        return Some(py);
    }
    assert!(
        std::env::var_os("CTSENTINEL_REQUIRE_BROWSER").is_none(),
        "web_browser: chromium ({chromium}), chromedriver ({driver}) and selenium in .venv are required \
         (CTSENTINEL_REQUIRE_BROWSER is set); run scripts/setup-browser.sh"
    );
    eprintln!("\n!!! SKIPPED web_browser: no chromium / chromedriver / selenium (run scripts/setup-browser.sh) !!!\n");
    None
}

/// The appliance, killed when dropped.
struct Appliance(Child);

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Base64 (standard alphabet, padded).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_clinician_signs_in_and_sees_the_verdict_and_the_report_sheet_in_a_real_browser() {
    let Some(shared) = common::shared_or_skip("web_browser") else {
        return;
    };
    let Some(py) = browser_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let state = dir.path().join("state");
    let src = shared.join("ct16/covid/ctmd_P001/SR_1");
    common::copy_slices(&src, &drop.join("ctmd_P001/SR_1"), 16, 16);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "board = \"generic-x86_64\"\ndrop = [\"{}\"]\nstate = \"{}\"\nmodels = \"{}\"\nstability_s = 1\npoll_interval_s = 0.2\nmin_free_mb = 100\ndisplay = \"png\"\n\n[web]\nlisten = \"127.0.0.1:0\"\n",
            drop.display(),
            state.display(),
            common::models().display()
        ),
    )
    .unwrap();
    let boards = common::repo().join("boards");
    let mut set = common::ctsentinel()
        .args(["set-password", "--config"])
        .arg(&config)
        .arg("--boards")
        .arg(&boards)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(set.wait().unwrap().success(), "set-password");
    let stored = std::fs::read_to_string(state.join("web/password")).unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));

    let mut child = common::ctsentinel()
        .args(["watch", "--config"])
        .arg(&config)
        .arg("--boards")
        .arg(&boards)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _appliance = Appliance(child);
    // The address the page listens on, from the service's log; the rest of the log is kept.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("results page on https://").nth(1) {
                let addr = rest.split('/').next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            eprintln!("  appliance: {line}");
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(120)).expect("the page started");
    common::wait_until("the series' result", Duration::from_secs(180), || {
        common::files_under(&state.join("results"))
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "png"))
    });
    // The public key of the certificate the appliance made: the one thing the browser trusts.
    use rcgen::PublicKeyData as _;
    let key_pem = std::fs::read_to_string(state.join("web/tls/key.pem")).unwrap();
    let spki = rcgen::KeyPair::from_pem(&key_pem).unwrap().subject_public_key_info();
    let spki_b64 = base64(&sha2_256(&spki));
    let out = common::repo().join("target/web-screens");
    let visit = std::process::Command::new(py)
        .arg(common::repo().join("tests/peers/browser_visit.py"))
        .args([
            "--url",
            &format!("https://{addr}"),
            "--spki",
            &spki_b64,
            "--password",
            PASSWORD,
        ])
        .arg("--out")
        .arg(&out)
        .env("SE_OFFLINE", "true")
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&visit.stdout);
    assert!(
        visit.status.success(),
        "the browser's visit failed:\n{}\n{seen}",
        String::from_utf8_lossy(&visit.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(seen.trim()).unwrap();
    let result: ctsentinel::report::ServiceResult = serde_json::from_str(
        &std::fs::read_to_string(
            common::files_under(&state.join("results"))
                .into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "json"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let words = ctsentinel::service::web::pages::verdict_words(result.scan.verdict);
    for width in ["desktop", "phone"] {
        assert_eq!(seen[format!("{width}_list_verdict")], words, "{seen}");
        assert_eq!(seen[format!("{width}_list_verdict_key")], result.scan.verdict.as_str());
        assert_eq!(seen[format!("{width}_result_verdict")], words);
        let model = seen[format!("{width}_model")].as_str().unwrap_or("");
        assert!(
            model.contains(&result.scan.model.sha256),
            "the model's identity shown: {model}"
        );
    }
    eprintln!("browser saw: {seen}; screenshots in {}", out.display());
    let screen = state.join("display/screen.png");
    assert!(screen.exists(), "the bedside display was drawn");
}

fn sha2_256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}
