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

/// An expression as deep as it is long (a 5,000-term `+` chain, or 5,000 nested
/// brackets) is refused with a positioned error, not a stack overflow in the CEL
/// parser or the checker; one just inside the bounds still parses.
#[test]
fn huge_expressions_are_refused_not_a_crash() {
    let rule = |expr: &str| {
        format!(
            "contract = \"x\"\n\n[[rule]]\nname = \"a\"\ntopic = \"lab/**\"\n\
             where = \"{expr}\"\nemit = {{ effect = \"deny\", reason = \"r\" }}\n"
        )
    };
    let chain = vec!["fact.body.l"; 5000].join("+");
    let deep = format!("{}1{} == 1", "(".repeat(5000), ")".repeat(5000));
    for (expr, want) in [
        (format!("size({chain}) > 0"), "expression too long"),
        (deep, "expression nested too deeply"),
    ] {
        let err = Contract::parse("big.nex", &rule(&expr)).expect_err("refused");
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].line, 6, "{err}");
        assert!(err.0[0].message.starts_with(want), "{err}");
    }
    // Just inside both bounds, on a 2 MiB stack (a tokio worker's): 8 brackets
    // around a 119-term chain, 255 tokens in all.
    let inner = vec!["1"; 119].join("+");
    let ok = format!("{}{inner}{} > 0", "(".repeat(8), ")".repeat(8));
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Contract::parse("ok.nex", &rule(&ok)).map(|_| ()))
        .expect("spawn");
    handle.join().expect("no crash").expect("accepted");
}

/// Comparing a body member with a short literal costs the literal's length (lengths
/// that differ end `==` at once): many such tests fit the cost bound, unlike a `+`
/// chain over body members.
#[test]
fn comparisons_cost_their_shorter_side() {
    let tests: Vec<String> = (0..30).map(|i| format!("fact.body.f{i} == 'v'")).collect();
    let src = format!(
        "contract = \"x\"\n\n[[rule]]\nname = \"a\"\ntopic = \"lab/**\"\n\
         where = \"{}\"\nemit = {{ effect = \"deny\", reason = \"r\" }}\n",
        tests.join(" || ")
    );
    let c = Contract::parse("cmp.nex", &src).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.rules()[0].cost() < 1_000, "{}", c.rules()[0].cost());
}
