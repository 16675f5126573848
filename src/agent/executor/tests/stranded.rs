//! The processes a release would strand are found only where the release deletes the namespace.

use super::*;

#[test]
fn processes_in_a_namespace_the_release_deletes_are_named() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    ex.sys.world.processes.insert(p(NS), sleeper());
    assert_eq!(ex.stranded(&work()), sleeper());
    ex.release(&work()).unwrap();
    assert!(ex.sys.world.netns.is_empty());
}

#[test]
fn a_namespace_that_stays_strands_nothing() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    ex.sys.world.processes.insert(p(NS), sleeper());
    calls(&mut ex);
    assert_eq!(ex.stranded(&work()), []);
    assert!(
        calls(&mut ex).is_empty(),
        "a persistent namespace was scanned"
    );

    let mut ex = executor();
    foreign(&mut ex);
    ex.isolate(&foreign_allowed()).unwrap();
    ex.sys.world.processes.insert(p(NS), sleeper());
    assert_eq!(
        ex.stranded(&work()),
        [],
        "a foreign namespace is never deleted"
    );
    assert_eq!(ex.stranded(&"other".parse().unwrap()), [], "no record");
}
