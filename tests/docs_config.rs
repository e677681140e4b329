//! docs/configuration.md stays true to the code.
//!
//! The page documents every key of the service configuration (`ctsentinel watch --config`) and
//! of a board profile (`boards/<board>.toml`) in markdown tables: the first cell of a row is the
//! key in backticks (`dicom.listen` for the key `listen` of the `[dicom]` table), and the
//! columns `default`, `range` and `example` follow the conventions stated at the top of the
//! page: a default or example that is a whole cell of code is a TOML value; a range `a..=b`
//! includes both ends; a range starting with "one of" lists every accepted value. Every table
//! on the page is a key table: its first header cell is `key` (the configuration) or
//! `profile key` (a board profile).
//!
//! What the test relies on: `RawConfig`, `RawDicom`, `RawValidation`, `RawWeb` (src/service/config.rs),
//! `Board` and `DisplayProfile` (src/present/mod.rs) are `#[serde(deny_unknown_fields)]`, so
//! - a key the code does not know is refused by `Config::load` / `load_board`: a misspelled or
//!   removed-from-the-code key in the docs fails the "each documented key loads" check;
//! - serde's refusal lists every field the struct accepts ("unknown field `x`, expected one of
//!   `a`, `b`, ..."): reading that list from a deliberately unknown key gives the keys the code
//!   accepts, so a key missing from the docs fails too, as does one missing from the example.
//!
//! Checks: (a) the key column of every table parses; (b) every key of
//! boards/ctsentinel.example.toml (set or commented out) is documented, and every documented
//! configuration key is shown there; every key of the shipped board profiles is documented;
//! (c) the keys the code accepts are exactly the documented ones; for each documented key, a
//! minimal valid configuration (the one tests/service.rs uses) plus that key set to its
//! documented default loads and gives the same `Config` as without it (so the documented
//! default is the code's), and set to its documented example it loads; every `a..=b` range
//! accepts both ends and refuses one below and one above; every "one of" list is accepted
//! value by value and a value outside it is refused. `[dicom]` keys are tried on a
//! configuration with a receiver (`listen` and `allowed_callers` set: without `listen` their
//! values are not checked), the `[validation]` floors on one with `require = true` (otherwise
//! they do not reach the `Config`).
//!
//! Run: `cargo test --test docs_config`.

mod common;

use std::collections::BTreeSet;

use ctsentinel::service::config::{load_board, Config};

/// Which file a documented key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The service configuration (first header cell `key`).
    Config,
    /// A board profile (first header cell `profile key`).
    Board,
}

/// One documented key: its row's cells, by column.
#[derive(Debug, Clone)]
struct Row {
    kind: Kind,
    /// `board`, `dicom.listen`, `display.width`.
    key: String,
    default: String,
    range: String,
    example: String,
    /// Line in docs/configuration.md (1-based), for messages.
    line: usize,
}

fn docs() -> String {
    let path = common::repo().join("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The cells of a markdown table line: `| a | b |` gives `["a", "b"]`.
fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').map(|c| c.trim().to_string()).collect()
}

/// A header separator line such as `|---|:--:|`.
fn is_separator(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|')
        && t.contains('-')
        && cells(t)
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
}

/// The code spans of a cell: "one of `a`, `b`" gives `["a", "b"]`.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The cell's content when the whole cell is one code span (`` `60` `` gives `60`).
fn whole_code(cell: &str) -> Option<String> {
    let inner = cell.trim().strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then(|| inner.to_string())
}

/// True when `text` is one TOML value (what may follow `key = `).
fn is_toml_value(text: &str) -> bool {
    toml::from_str::<toml::Table>(&format!("v = {text}\n")).is_ok()
}

/// (a) Every table of docs/configuration.md, parsed into rows.
fn documented() -> Vec<Row> {
    let text = docs();
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = Vec::new();
    let mut in_fence = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            i += 1;
            continue;
        }
        let starts_table =
            !in_fence && line.trim_start().starts_with('|') && lines.get(i + 1).is_some_and(|next| is_separator(next));
        if !starts_table {
            i += 1;
            continue;
        }
        let header: Vec<String> = cells(line).iter().map(|c| c.to_lowercase()).collect();
        let kind = match header[0].as_str() {
            "key" => Kind::Config,
            "profile key" => Kind::Board,
            other => panic!(
                "docs/configuration.md:{}: a table whose first column is {other:?}; every table there documents keys \
                 (first column `key` or `profile key`, see tests/docs_config.rs)",
                i + 1
            ),
        };
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("docs/configuration.md:{}: the table has no {name:?} column", i + 1))
        };
        let (d, r, e) = (column("default"), column("range"), column("example"));
        i += 2;
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            let c = cells(lines[i]);
            assert_eq!(
                c.len(),
                header.len(),
                "docs/configuration.md:{}: {} cells, the header has {} (a `|` inside a cell?)",
                i + 1,
                c.len(),
                header.len()
            );
            let key = whole_code(&c[0]).unwrap_or_else(|| {
                panic!(
                    "docs/configuration.md:{}: the first cell must be the key in backticks, not {:?}",
                    i + 1,
                    c[0]
                )
            });
            assert!(
                !key.is_empty()
                    && key.split('.').all(|part| {
                        !part.is_empty()
                            && part
                                .chars()
                                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
                    }),
                "docs/configuration.md:{}: {key:?} is not a key name",
                i + 1
            );
            rows.push(Row {
                kind,
                key,
                default: c[d].clone(),
                range: c[r].clone(),
                example: c[e].clone(),
                line: i + 1,
            });
            i += 1;
        }
    }
    rows
}

fn keys_of(rows: &[Row], kind: Kind) -> BTreeSet<String> {
    rows.iter().filter(|r| r.kind == kind).map(|r| r.key.clone()).collect()
}

/// A TOML document as `key = value` lines: the top level first, then one `[table]` each, so
/// any dotted key can be set or replaced (values are TOML text, as the docs write them).
#[derive(Debug, Clone, Default)]
struct Doc {
    top: Vec<(String, String)>,
    tables: Vec<(String, Vec<(String, String)>)>,
}

fn upsert(entries: &mut Vec<(String, String)>, key: &str, value: &str) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => entries.push((key.to_string(), value.to_string())),
    }
}

impl Doc {
    fn set(&mut self, dotted: &str, value: &str) -> &mut Doc {
        match dotted.split_once('.') {
            None => upsert(&mut self.top, dotted, value),
            Some((table, key)) => {
                assert!(!key.contains('.'), "{dotted}: one table level only");
                let i = match self.tables.iter().position(|(t, _)| t == table) {
                    Some(i) => i,
                    None => {
                        self.tables.push((table.to_string(), Vec::new()));
                        self.tables.len() - 1
                    }
                };
                upsert(&mut self.tables[i].1, key, value);
            }
        }
        self
    }

    /// Whether `dotted` is set.
    fn has(&self, dotted: &str) -> bool {
        match dotted.split_once('.') {
            None => self.top.iter().any(|(k, _)| k == dotted),
            Some((table, key)) => self
                .tables
                .iter()
                .any(|(t, entries)| t == table && entries.iter().any(|(k, _)| k == key)),
        }
    }

    fn with(&self, dotted: &str, value: &str) -> Doc {
        let mut d = self.clone();
        d.set(dotted, value);
        d
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.top {
            out.push_str(&format!("{k} = {v}\n"));
        }
        for (t, entries) in &self.tables {
            out.push_str(&format!("\n[{t}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes configurations and board profiles into a temporary folder and loads them.
struct Rig {
    dir: tempfile::TempDir,
    /// The minimal valid configuration (as tests/service.rs writes it).
    config: Doc,
    /// The same with a receiver, so that `[dicom]` values are checked.
    dicom: Doc,
    /// The same with the site validation gate on, so that the floors reach the `Config`.
    gated: Doc,
    /// The same with the results page on (`web.listen`), so that `[web]` values are checked;
    /// and with its certificate and key set, which go together.
    web: Doc,
    web_tls: Doc,
    /// A minimal valid board profile (with SPI wiring, so every backend is accepted).
    board: Doc,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        std::fs::create_dir_all(&drop).unwrap();
        let mut config = Doc::default();
        config
            .set("board", "\"generic-x86_64\"")
            .set("drop", &format!("[{}]", toml_string(&drop.display().to_string())))
            .set("state", &toml_string(&dir.path().join("state").display().to_string()))
            .set("models", &toml_string(&common::models().display().to_string()))
            .set("display", "\"none\"");
        let dicom = config
            .with("dicom.listen", "\"127.0.0.1:11112\"")
            .with("dicom.allowed_callers", "[\"CT_SCANNER\"]");
        let gated = config.with("validation.require", "true");
        let web = config.with("web.listen", "\"127.0.0.1:8443\"");
        let web_tls = web
            .with("web.cert", "\"/etc/ctsentinel/c.pem\"")
            .with("web.key", "\"/etc/ctsentinel/k.pem\"");
        let mut board = Doc::default();
        board
            .set("name", "\"docs-board\"")
            .set("description", "\"a board for tests/docs_config.rs\"")
            .set("threads", "2")
            .set("models", "\"/usr/share/ctsentinel/models\"")
            .set("display.backend", "\"framebuffer\"")
            .set("display.width", "800")
            .set("display.height", "480")
            .set("display.controller", "\"st7789\"")
            .set("display.dc_line", "25");
        Rig {
            dir,
            config,
            dicom,
            gated,
            web,
            web_tls,
            board,
        }
    }

    /// The base a documented key is tried on: `[dicom]` keys on the one with a receiver.
    fn base(&self, kind: Kind, key: &str) -> &Doc {
        match kind {
            Kind::Board => &self.board,
            Kind::Config if key.starts_with("dicom.") => &self.dicom,
            Kind::Config if key.starts_with("validation.") && key != "validation.require" => &self.gated,
            Kind::Config if key == "web.cert" || key == "web.key" => &self.web_tls,
            Kind::Config if key.starts_with("web.") && key != "web.listen" => &self.web,
            Kind::Config => &self.config,
        }
    }

    fn load_config(&self, doc: &Doc) -> Result<Config, String> {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, doc.text()).unwrap();
        Config::load(&path, Some(&common::repo().join("boards"))).map_err(|e| e.to_string())
    }

    fn load_board(&self, doc: &Doc) -> Result<ctsentinel::service::config::Board, String> {
        let path = self.dir.path().join("board.toml");
        std::fs::write(&path, doc.text()).unwrap();
        load_board(&path).map_err(|e| e.to_string())
    }

    /// Ok(()) if `doc` loads as a `kind` file, else the error's text.
    fn loads(&self, kind: Kind, doc: &Doc) -> Result<(), String> {
        match kind {
            Kind::Config => self.load_config(doc).map(|_| ()),
            Kind::Board => self.load_board(doc).map(|_| ()),
        }
    }

    /// The fields serde accepts in table `table` ("" for the top level) of a `kind` file, read
    /// from its refusal of an unknown key.
    fn accepted_fields(&self, kind: Kind, base: &Doc, table: &str) -> BTreeSet<String> {
        let bogus = "zz_not_a_documented_key";
        let dotted = if table.is_empty() {
            bogus.to_string()
        } else {
            format!("{table}.{bogus}")
        };
        let err = self
            .loads(kind, &base.with(&dotted, "1"))
            .expect_err("an unknown key must be refused (deny_unknown_fields)");
        let at = err
            .find(&format!("unknown field `{bogus}`"))
            .unwrap_or_else(|| panic!("{dotted}: not refused as an unknown field: {err}"));
        let rest = &err[at..];
        let expected = rest
            .find("expected")
            .unwrap_or_else(|| panic!("{dotted}: serde's message names no expected fields: {err}"));
        let line = rest[expected..].lines().next().unwrap_or_default();
        let fields: BTreeSet<String> = code_spans(line).into_iter().collect();
        assert!(!fields.is_empty(), "{dotted}: no fields read from {err:?}");
        fields
    }
}

/// Every key of a TOML table, dotted below the top level.
fn toml_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let dotted = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => toml_keys(t, &dotted, out),
            _ => {
                out.insert(dotted);
            }
        }
    }
}

/// The keys of boards/ctsentinel.example.toml: those set, and those shown commented out
/// (`# key = value` lines, in the table of the `[table]` or `# [table]` line above them).
fn example_keys() -> BTreeSet<String> {
    let path = common::repo().join("boards/ctsentinel.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut keys = BTreeSet::new();
    let live: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml_keys(&live, "", &mut keys);
    let is_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut table = String::new();
    for line in text.lines() {
        let t = line.trim();
        let (commented, body) = match t.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, t),
        };
        if let Some(name) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
            if is_name(name.trim()) {
                table = name.trim().to_string();
            }
            continue;
        }
        if !commented {
            continue;
        }
        if let Some((name, _)) = body.split_once('=') {
            let name = name.trim();
            if is_name(name) {
                keys.insert(if table.is_empty() {
                    name.to_string()
                } else {
                    format!("{table}.{name}")
                });
            }
        }
    }
    keys
}

#[test]
fn every_key_of_the_example_and_the_board_profiles_is_documented() {
    let rows = documented();
    let config = keys_of(&rows, Kind::Config);
    let board = keys_of(&rows, Kind::Board);
    assert!(
        config.len() >= 10 && board.len() >= 5,
        "too few keys read: {config:?} {board:?}"
    );
    for kind in [Kind::Config, Kind::Board] {
        let mut seen = BTreeSet::new();
        for r in rows.iter().filter(|r| r.kind == kind) {
            assert!(
                seen.insert(&r.key),
                "docs/configuration.md:{}: {} documented twice",
                r.line,
                r.key
            );
        }
    }

    let example = example_keys();
    let undocumented: Vec<&String> = example.difference(&config).collect();
    assert!(
        undocumented.is_empty(),
        "keys of boards/ctsentinel.example.toml missing from docs/configuration.md: {undocumented:?}"
    );
    let not_shown: Vec<&String> = config.difference(&example).collect();
    assert!(
        not_shown.is_empty(),
        "documented keys that boards/ctsentinel.example.toml does not show (set or commented out): {not_shown:?}"
    );

    for name in ["rpi4", "rpi5", "jetson-orin-nano", "generic-x86_64"] {
        let path = common::repo().join(format!("boards/{name}.toml"));
        let profile: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut keys = BTreeSet::new();
        toml_keys(&profile, "", &mut keys);
        let undocumented: Vec<&String> = keys.difference(&board).collect();
        assert!(
            undocumented.is_empty(),
            "keys of boards/{name}.toml missing from docs/configuration.md: {undocumented:?}"
        );
    }
}

#[test]
fn the_documented_keys_are_exactly_the_keys_the_code_accepts() {
    let rows = documented();
    let rig = Rig::new();
    for (kind, base) in [(Kind::Config, &rig.config), (Kind::Board, &rig.board)] {
        let documented = keys_of(&rows, kind);
        // Tables are the prefixes of dotted keys; serde lists a table as one field of its parent.
        let tables: BTreeSet<String> = documented
            .iter()
            .filter_map(|k| k.split_once('.').map(|(t, _)| t.to_string()))
            .collect();
        let top_documented: BTreeSet<String> = documented
            .iter()
            .filter(|k| !k.contains('.'))
            .cloned()
            .chain(tables.iter().cloned())
            .collect();
        let top_code = rig.accepted_fields(kind, base, "");
        assert_eq!(
            top_code, top_documented,
            "{kind:?}: top-level keys the code accepts (left) against docs/configuration.md (right)"
        );
        for t in &tables {
            let code: BTreeSet<String> = rig
                .accepted_fields(kind, base, t)
                .into_iter()
                .map(|f| format!("{t}.{f}"))
                .collect();
            let docs: BTreeSet<String> = documented
                .iter()
                .filter(|k| k.starts_with(&format!("{t}.")))
                .cloned()
                .collect();
            assert_eq!(
                code, docs,
                "{kind:?}: keys of [{t}] the code accepts (left) against docs/configuration.md (right)"
            );
        }
    }
}

#[test]
fn each_documented_default_and_example_loads_and_a_default_is_the_codes_default() {
    let rows = documented();
    let rig = Rig::new();
    for r in &rows {
        let at = format!("docs/configuration.md:{} ({})", r.line, r.key);
        let base = rig.base(r.kind, &r.key);
        let default = whole_code(&r.default).filter(|v| is_toml_value(v));
        let example = whole_code(&r.example).filter(|v| is_toml_value(v));
        assert!(
            default.is_some() || example.is_some(),
            "{at}: neither the default {:?} nor the example {:?} is a TOML value in backticks; give an example",
            r.default,
            r.example
        );
        if let Some(v) = &default {
            let with = base.with(&r.key, v);
            // The key left out (the base does not set it) must give the same result: the
            // documented default is the code's own.
            let compare = !base.has(&r.key);
            match r.kind {
                Kind::Config => {
                    let got = rig
                        .load_config(&with)
                        .unwrap_or_else(|e| panic!("{at}: the documented default {v} does not load: {e}"));
                    if compare {
                        let without = rig.load_config(base).unwrap();
                        assert_eq!(
                            got, without,
                            "{at}: the documented default {v} is not the code's default"
                        );
                    }
                }
                Kind::Board => {
                    let got = rig
                        .load_board(&with)
                        .unwrap_or_else(|e| panic!("{at}: the documented default {v} does not load: {e}"));
                    if compare {
                        let without = rig.load_board(base).unwrap();
                        assert_eq!(
                            got, without,
                            "{at}: the documented default {v} is not the code's default"
                        );
                    }
                }
            }
        }
        if let Some(v) = &example {
            rig.loads(r.kind, &base.with(&r.key, v))
                .unwrap_or_else(|e| panic!("{at}: the documented example {v} does not load: {e}"));
        }
    }
}

/// `a..=b` as its two ends, as written.
fn numeric_range(cell: &str) -> Option<(String, String)> {
    let (lo, hi) = whole_code(cell)?
        .split_once("..=")
        .map(|(a, b)| (a.to_string(), b.to_string()))?;
    (lo.parse::<f64>().is_ok() && hi.parse::<f64>().is_ok()).then_some((lo, hi))
}

/// One step outside a range end, written as an integer when both ends are.
fn outside(end: &str, step: f64, integers: bool) -> String {
    let v = end.parse::<f64>().unwrap() + step;
    if integers {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

#[test]
fn documented_ranges_and_value_lists_are_what_the_code_enforces() {
    let rows = documented();
    let rig = Rig::new();
    let mut checked = 0;
    for r in &rows {
        let at = format!("docs/configuration.md:{} ({})", r.line, r.key);
        let base = rig.base(r.kind, &r.key);
        if let Some((lo, hi)) = numeric_range(&r.range) {
            let integers = !lo.contains('.') && !hi.contains('.');
            for end in [&lo, &hi] {
                rig.loads(r.kind, &base.with(&r.key, end))
                    .unwrap_or_else(|e| panic!("{at}: {end}, an end of the documented range, is refused: {e}"));
            }
            for v in [outside(&lo, -1.0, integers), outside(&hi, 1.0, integers)] {
                assert!(
                    rig.loads(r.kind, &base.with(&r.key, &v)).is_err(),
                    "{at}: {v}, outside the documented range {lo}..={hi}, is accepted"
                );
            }
            checked += 1;
        } else if r.range.trim_start().to_lowercase().starts_with("one of") {
            let values = code_spans(&r.range);
            assert!(!values.is_empty(), "{at}: \"one of\" lists no values in backticks");
            for v in &values {
                rig.loads(r.kind, &base.with(&r.key, &toml_string(v)))
                    .unwrap_or_else(|e| panic!("{at}: {v:?}, a documented value, is refused: {e}"));
            }
            let bogus = toml_string("not-a-documented-value");
            assert!(
                rig.loads(r.kind, &base.with(&r.key, &bogus)).is_err(),
                "{at}: a value outside the documented list is accepted"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} ranges or value lists were checked");
}

#[test]
fn the_rig_itself_loads_and_refuses_an_unknown_key() {
    // The checks above mean something only if the base files load and unknown keys fail.
    let rig = Rig::new();
    rig.load_config(&rig.config).unwrap();
    let d = rig.load_config(&rig.dicom).unwrap();
    assert!(
        d.dicom.is_some(),
        "the [dicom] base has a receiver, so its values are checked"
    );
    let g = rig.load_config(&rig.gated).unwrap();
    assert!(
        g.validation.is_some(),
        "the gated base has floors, so their defaults are compared"
    );
    rig.load_board(&rig.board).unwrap();
    assert!(
        rig.load_config(&rig.config.with("stabilty_s", "60")).is_err(),
        "a misspelled key must fail"
    );
    assert!(rig
        .load_config(&rig.dicom.with("dicom.listn", "\"127.0.0.1:1\""))
        .is_err());
    assert!(rig.load_board(&rig.board.with("display.widht", "800")).is_err());
}
