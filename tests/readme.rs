//! The README's key table is generated from the keymaps and the action table; this test fails
//! when it drifts (regenerate docs/keys.md with `CINDER_BLESS=1 cargo test --lib tui::keymap`
//! and copy its `## default` section between the README's `keys:` markers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn readme_key_table_matches_the_generated_one() {
    let generated = cinder::tui::keymap::keys_markdown().unwrap();
    let start = generated.find("## default").unwrap();
    let end = generated[start + 5..]
        .find("\n## ")
        .map_or(generated.len(), |i| start + 5 + i);
    let want = generated[start..end]
        .trim()
        .replacen("## default", "#### default keymap", 1);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let a = readme.find("<!-- keys:begin").unwrap();
    let a = a + readme[a..].find('\n').unwrap() + 1;
    let b = readme.find("<!-- keys:end -->").unwrap();
    let have = readme[a..b].trim();
    assert_eq!(have, want, "README key table drifted from the keymaps");
}

#[test]
fn readme_lists_every_command() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for c in cinder::tui::action::COMMANDS {
        assert!(
            readme.contains(&format!("`/{}", c.name)),
            "README misses /{}",
            c.name
        );
    }
}
