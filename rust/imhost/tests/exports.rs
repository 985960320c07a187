//! Structural checks of the C ABI's source: every exported function runs behind the panic
//! boundary, carries the `imh_` prefix, and states its thread safety.

use std::path::PathBuf;

struct Export {
    file: String,
    name: String,
    docs: String,
    body_start: String,
}

fn exports() -> Vec<Export> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let Some(at) = line.find("extern \"C\" fn ") else { continue };
            if !line.trim_start().starts_with("pub ") {
                continue;
            }
            let rest = &line[at + "extern \"C\" fn ".len()..];
            let name = rest.split('(').next().unwrap().to_owned();
            let docs: Vec<&str> = lines[..n]
                .iter()
                .rev()
                .take_while(|l| {
                    let t = l.trim_start();
                    t.starts_with("///") || t.starts_with("#[")
                })
                .copied()
                .collect();
            // The body starts on the line after the one that ends the signature with `{`.
            let open = (n..lines.len()).find(|&i| lines[i].trim_end().ends_with('{')).expect("function body");
            let body = lines.get(open + 1).map_or("", |l| l.trim()).to_owned();
            found.push(Export {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                name,
                docs: docs.join("\n"),
                body_start: body,
            });
        }
    }
    found
}

#[test]
fn every_export_runs_behind_the_panic_boundary_with_prefix_and_thread_safety() {
    let all = exports();
    assert!(all.len() >= 20, "found only {} exports", all.len());
    for e in &all {
        assert!(e.name.starts_with("imh_"), "{}: {} lacks the imh_ prefix", e.file, e.name);
        assert!(
            e.body_start.starts_with(&format!("ffi_boundary!(\"{}\"", e.name)),
            "{}: {} must consist of ffi_boundary!(\"{}\", ...), found: {}",
            e.file,
            e.name,
            e.name,
            e.body_start
        );
        assert!(e.docs.contains("#[unsafe(no_mangle)]"), "{}: {} is not exported unmangled", e.file, e.name);
        assert!(e.docs.contains("Thread safety"), "{}: {} does not state its thread safety", e.file, e.name);
    }
}
