//! Loading plugins again and again does not use up file descriptors: the checked folder a
//! library is loaded through stays open for the life of the process (its descriptor number is part
//! of the library's name), but one descriptor is kept per folder, not one per load. (Alone in its
//! test binary: the count of open descriptors is exact only with no other test running.)

use imhost_plugin_host::native;
use imhost_plugin_host::testing::build_test_plugins;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn loading_a_plugin_many_times_keeps_one_descriptor_per_folder() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    build_test_plugins(first.path(), &["test_good"]);
    build_test_plugins(second.path(), &["test_good"]);
    let before = open_descriptors();
    let load = |dir: &std::path::Path| {
        let p = native::load(&dir.join("libtest_good.so")).unwrap();
        assert_eq!(p.name, "test-good");
    };
    load(first.path());
    assert_eq!(open_descriptors(), before + 1, "the first load keeps its folder open");
    for _ in 0..500 {
        load(first.path());
    }
    assert_eq!(open_descriptors(), before + 1, "500 more loads from that folder keep nothing more open");
    load(second.path());
    for _ in 0..100 {
        load(second.path());
        load(first.path());
    }
    assert_eq!(open_descriptors(), before + 2, "a second folder keeps one more");
}
