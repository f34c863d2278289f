//! The README's configuration reference is generated from the code; this fails when it
//! is stale (regenerate with `scripts/gen-docs.sh`).

#[test]
fn readme_settings_table_is_current() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md is readable");
    let begin = "<!-- settings:begin -->\n";
    let start = readme
        .find(begin)
        .expect("README has the settings:begin marker")
        + begin.len();
    let end = readme
        .find("<!-- settings:end -->")
        .expect("README has the settings:end marker");
    assert_eq!(
        &readme[start..end],
        beehive_common::config::settings_markdown(),
        "README.md's configuration reference is stale: run scripts/gen-docs.sh"
    );
}
