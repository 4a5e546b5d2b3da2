//! Every case runs: each `pub async fn` of a case file is in the list that file ends with,
//! which `suite!` expands into tests.

use std::path::Path;

fn case_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reads the cases folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            case_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_case_is_in_its_files_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cases");
    let mut files = Vec::new();
    case_files(&root, &mut files);
    let mut cases = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("reads a case file");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter_map(|l| l.split(['<', '(']).next())
            .collect();
        if names.is_empty() {
            continue;
        }
        let list = text
            .rfind("macro_rules!")
            .map(|at| &text[at..])
            .unwrap_or_else(|| panic!("{} has cases but no list", file.display()));
        for name in names {
            cases += 1;
            assert!(
                list.lines().any(|l| l.trim() == format!("{name},")),
                "{}: `{name}` is not in the file's list, so no backend runs it",
                file.display()
            );
        }
    }
    assert!(
        cases > 100,
        "found only {cases} cases: the scan missed the case files"
    );
}
