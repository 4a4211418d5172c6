//! Golden tests of `nexus contract check` errors: every `tests/errors/*.nex` must be
//! refused with exactly the positions and messages of its `.err` file. Run with
//! `UPDATE_GOLDEN=1` to rewrite the `.err` files after an intended change (and review
//! the diff).

use std::path::Path;

use nexus_contract::Contract;

#[test]
fn parser_errors_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/errors")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nex"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let src = std::fs::read_to_string(case).expect("read case");
        let got = match Contract::parse(name, &src) {
            Ok(_) => "(accepted)\n".to_owned(),
            Err(e) => format!("{e}\n"),
        };
        let golden = case.with_extension("err");
        if update {
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!("{name}:\n  want: {want}  got:  {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
