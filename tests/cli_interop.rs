//! `export` and `import` through the binary: a `--arch v0` model goes to transformers' built-in
//! format and a current one to the remote-code format (the built-in format refused for it, with
//! the reason); each folder imports into a fresh base folder, bringing its tokenizer, and
//! exports again to the same weights. `--arch v0` with a sliding-window pattern is refused.
//! (transformers itself loads these folders in `cargo xtask hf-check`.)

mod common;

use std::path::Path;

use common::{nanochat, nanochat_args, ok, tiny_base_train, tok_train};

fn train(base: &Path, arch: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--arch", arch, "--model-tag", arch];
    args.extend_from_slice(extra);
    nanochat_args(base, &tiny_base_train("1", &args))
}

#[test]
fn both_architectures_export_and_import_back() {
    let home = tempfile::tempdir().unwrap();
    let b = &home.path().join("base");
    tok_train(b);
    let refused = train(b, "v0", &["--window-pattern", "SSSL"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--window-pattern SSSL with --arch v0"),
        "{err}"
    );

    for (arch, format) in [("v0", "builtin"), ("current", "remote-code")] {
        ok(&train(b, arch, &[]), "base-train");
        let out = home.path().join(format!("hf-{arch}"));
        let o = out.to_str().unwrap();
        let said = ok(
            &nanochat(b, &["export", o, "-i", "base", "-g", arch]),
            "export",
        );
        assert!(said.contains(&format!("({format} format")), "{said}");
        if arch == "current" {
            assert!(out.join("modeling_nanochat_rs.py").is_file());
            let refused = nanochat(
                b,
                &[
                    "export",
                    &format!("{o}-builtin"),
                    "-i",
                    "base",
                    "-g",
                    arch,
                    "--format",
                    "builtin",
                ],
            );
            assert!(!refused.status.success());
            let err = String::from_utf8_lossy(&refused.stderr);
            assert!(
                err.contains("cannot express this model: it uses value embeddings"),
                "{err}"
            );
        }
        // Into a base folder with no tokenizer yet: the folder's becomes its tokenizer.
        let fresh = home.path().join(format!("fresh-{arch}"));
        let said = ok(
            &nanochat(&fresh, &["import", o, "--model-tag", "back"]),
            "import",
        );
        assert!(said.contains("tokenizer of"), "{said}");
        let again = home.path().join(format!("again-{arch}"));
        ok(
            &nanochat(
                &fresh,
                &[
                    "export",
                    again.to_str().unwrap(),
                    "-i",
                    "base",
                    "-g",
                    "back",
                ],
            ),
            "export again",
        );
        assert_eq!(
            std::fs::read(out.join("model.safetensors")).unwrap(),
            std::fs::read(again.join("model.safetensors")).unwrap(),
            "{arch}: the weights changed on the way back"
        );
    }
}
