//! The sample library `make run` builds and indexes: `scripts/sample_library.sh` into a
//! temporary folder, then `voxloop index add` over it, as the Makefile does. Generated sounds
//! are always there; recorded sounds (Debian's sound-theme-freedesktop) and espeak-ng voices are
//! checked where the machine has them (`.ci/run` installs both when it can).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn voxloop(index_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxloop"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("VOXLOOP_CONFIG")
        .env("VOXLOOP_INDEX_DIR", index_dir)
        .env("NO_COLOR", "1");
    cmd
}

fn search(index_dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = voxloop(index_dir).arg("search").args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_sample_library_is_built_and_indexed_with_honest_descriptions() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("samples");
    let index = tmp.path().join("index");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sample_library.sh");
    let out = Command::new(script).arg(&lib).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let sidecar = std::fs::read_to_string(lib.join("metadata.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> =
        sidecar.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(entries.len() >= 15, "at least the generated sounds: {}", entries.len());
    for e in &entries {
        assert!(lib.join(e["path"].as_str().unwrap()).is_file(), "{e}");
        assert!(e["description"].as_str().unwrap().len() > 10, "{e}");
    }

    let out = voxloop(&index).args(["index", "add", "--embedder", "hashing"]).arg(&lib).output();
    let out = out.unwrap();
    let log =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains(", 0 skipped"), "every file decodes: {log}");

    let hits = search(&index, &["a single struck bell", "--k", "3"]);
    let paths: Vec<&str> =
        hits.as_array().unwrap().iter().map(|h| h["item"]["path"].as_str().unwrap()).collect();
    assert!(paths.iter().any(|p| p.ends_with("generated/bell_strike.wav")), "{paths:?}");

    if Path::new("/usr/share/sounds/freedesktop/stereo/bell.oga").is_file() {
        let hits = search(&index, &["short bell ding", "--kind", "sound", "--k", "3"]);
        let top = hits[0]["item"]["path"].as_str().unwrap();
        assert!(top.ends_with("freedesktop/bell.oga"), "recorded sounds are indexed: {hits}");
        // The theme plays one file for several events: one item, each event's entry an alias
        // that is found by its own words, and the ingest says which entries merged.
        assert!(log.contains("merged") && !log.contains(" 0 merged"), "{log}");
        // Chinese queries find the theme's sounds (their Chinese tags, by BM25), as the model's
        // mostly Chinese tool calls ask.
        for (query, file) in [
            ("闹钟响了", "alarm-clock-elapsed.oga"),
            ("来电铃声", "phone-incoming-call.oga"),
            ("相机快门", "camera-shutter.oga"),
        ] {
            let hits = search(&index, &[query, "--kind", "sound", "--k", "3"]);
            let paths: Vec<&str> = hits
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["item"]["path"].as_str().unwrap())
                .collect();
            assert!(paths.iter().any(|p| p.ends_with(file)), "{query}: {paths:?}");
        }
        let hits = search(&index, &["screen capture", "--kind", "sound", "--k", "1"]);
        let aliases = hits[0]["item"]["aliases"].as_array().cloned().unwrap_or_default();
        assert!(
            aliases.iter().any(|a| a["path"].as_str().unwrap().ends_with("screen-capture.oga")),
            "the screen-capture entry is an alias of the item with its audio: {hits}"
        );
    } else {
        eprintln!("sound-theme-freedesktop not installed: recorded sounds not checked");
    }
    let has_espeak =
        Command::new("espeak-ng").arg("--version").output().is_ok_and(|o| o.status.success());
    if has_espeak {
        let hits = search(&index, &["male English voice", "--kind", "timbre", "--k", "10"]);
        assert!(hits.as_array().unwrap().len() >= 4, "espeak-ng voices are indexed: {hits}");
    } else {
        eprintln!("espeak-ng not installed: voices not checked");
    }
}
