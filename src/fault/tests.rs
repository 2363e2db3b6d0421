use super::judge::splitmix64;
use super::*;

fn parse(spec: &str) -> Fault {
    spec.parse()
        .unwrap_or_else(|e| panic!("{spec:?} rejected: {e}"))
}

#[test]
fn every_kind_parses_and_prints_back_the_same() {
    for spec in [
        "tcp:delay=100",
        "udp:delay=5-50",
        "tcp:dribble=3/20",
        "tcp:truncate=0",
        "udp:truncate=4",
        "tcp:corrupt",
        "udp:corrupt",
        "udp:duplicate",
        "udp:drop,p=0.3",
        "tcp:hang,first=2",
        "tcp:close,after=5",
        "tcp:reset,every=3",
        "tcp:slow-close=200",
        "udp:drop,p=0.5,first=10,after=2,every=2",
        "tcp:bandwidth=100,dir=up",
        "tcp:timeout=0",
        "tcp:reset-peer=50,p=0.5",
        "tcp:slicer=10",
        "tcp:slicer=10/3",
        "tcp:slicer=10/0/500",
    ] {
        assert_eq!(parse(spec).to_string(), spec);
    }
}

#[test]
fn values_are_typed() {
    assert_eq!(
        parse("tcp:dribble=3/20").kind,
        FaultKind::Dribble {
            bytes: 3,
            every_ms: 20
        }
    );
    assert_eq!(
        parse("udp:delay=7").kind,
        FaultKind::Delay {
            min_ms: 7,
            max_ms: 7
        }
    );
    let select = parse("udp:drop,p=.25,first=0").select;
    assert_eq!((select.p, select.first), (Some(0.25), Some(0)));
}

#[test]
fn bad_specs_are_one_line_errors_naming_the_spec() {
    for spec in [
        "",
        "drop",
        "icmp:drop",
        "udp:explode",
        "tcp:drop",
        "tcp:duplicate",
        "udp:hang",
        "udp:reset",
        "udp:dribble=1/1",
        "udp:slow-close=5",
        "udp:drop,p=1.5",
        "udp:drop,p=-0.1",
        "udp:drop,p=1e-3",
        "udp:drop,p=nan",
        "udp:drop,p=.",
        "udp:drop,every=0",
        "udp:drop,every",
        "udp:drop,often=2",
        "tcp:delay",
        "tcp:delay=",
        "tcp:delay=50-10",
        "tcp:delay=-5",
        "tcp:delay=1.5",
        "tcp:delay=0x10",
        "tcp:dribble=0/10",
        "udp:bandwidth=10",
        "udp:timeout=5",
        "tcp:bandwidth",
        "tcp:reset-peer",
        "tcp:slicer=0/1",
        "tcp:slicer=1/2/3/4",
        "tcp:slicer=a",
        "tcp:slicer=5/",
        "tcp:dribble=5",
        "tcp:truncate",
        "tcp:close=3",
        "udp:drop=1",
        "udp:drop,first=-1",
        "tcp:slow-close=99999999999999999999999",
    ] {
        let err = spec
            .parse::<Fault>()
            .err()
            .unwrap_or_else(|| panic!("{spec:?} accepted"));
        assert!(err.contains(&format!("'{spec}'")), "{spec:?}: {err}");
        assert!(!err.contains('\n'), "{spec:?}: {err}");
    }
}

#[test]
fn validate_catches_hand_built_faults() {
    let mut fault = parse("udp:drop");
    fault.protocol = Protocol::Tcp;
    assert!(fault.validate().is_err());
    let mut fault = parse("udp:drop");
    fault.select.p = Some(2.0);
    assert!(fault.validate().is_err());
    assert!(parse("udp:drop,p=1").validate().is_ok());
}

fn judge_udp(faults: &mut Faults, n: u64) -> Vec<Verdict> {
    (0..n)
        .map(|i| faults.judge(Protocol::Udp, [i, 0]))
        .collect()
}

fn hits(verdicts: &[Verdict], kind: FaultKind) -> Vec<usize> {
    verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.applied[kind.index()] > 0)
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn first_after_and_every_count_the_protocols_messages() {
    let mut faults = Faults::new(1, &[parse("udp:drop,first=2")]);
    assert_eq!(hits(&judge_udp(&mut faults, 5), FaultKind::Drop), [1, 2]);
    let mut faults = Faults::new(1, &[parse("udp:drop,after=3")]);
    assert_eq!(hits(&judge_udp(&mut faults, 5), FaultKind::Drop), [4, 5]);
    let mut faults = Faults::new(1, &[parse("udp:drop,every=2")]);
    assert_eq!(hits(&judge_udp(&mut faults, 7), FaultKind::Drop), [2, 4, 6]);
    let mut faults = Faults::new(1, &[parse("udp:drop,after=1,every=2,first=5")]);
    assert_eq!(hits(&judge_udp(&mut faults, 9), FaultKind::Drop), [2, 4]);
    let mut faults = Faults::new(1, &[parse("udp:drop,first=0")]);
    assert!(hits(&judge_udp(&mut faults, 3), FaultKind::Drop).is_empty());
}

#[test]
fn tcp_messages_do_not_count_for_udp_faults() {
    let mut faults = Faults::new(1, &[parse("udp:drop,first=1"), parse("tcp:close")]);
    assert!(faults.any(Protocol::Tcp) && faults.any(Protocol::Udp));
    let tcp = faults.judge(Protocol::Tcp, [0, 0]);
    assert_eq!(tcp.terminal, Some(FaultKind::Close));
    assert_eq!(
        faults.judge(Protocol::Udp, [0, 0]).terminal,
        Some(FaultKind::Drop)
    );
    assert!(faults.judge(Protocol::Udp, [1, 0]).is_clean());
}

#[test]
fn a_fault_added_later_counts_from_then() {
    let mut faults = Faults::new(1, &[]);
    assert!(!faults.any(Protocol::Udp));
    judge_udp(&mut faults, 10);
    faults.add(parse("udp:drop,first=1")).unwrap();
    assert!(faults.any(Protocol::Udp));
    assert_eq!(
        faults.judge(Protocol::Udp, [10, 0]).terminal,
        Some(FaultKind::Drop)
    );
    assert!(faults.judge(Protocol::Udp, [11, 0]).is_clean());
    faults.clear();
    assert!(!faults.any(Protocol::Udp) && !faults.any(Protocol::Tcp));
}

#[test]
fn probability_is_a_function_of_the_seed_and_the_ordinals() {
    let spec = [parse("udp:drop,p=0.3")];
    let pattern = |seed| {
        hits(
            &judge_udp(&mut Faults::new(seed, &spec), 1000),
            FaultKind::Drop,
        )
    };
    let a = pattern(42);
    assert_eq!(a, pattern(42), "same seed, same pattern");
    assert_ne!(a, pattern(43), "another seed, another pattern");
    assert!(
        (200..400).contains(&a.len()),
        "{} of 1000 at p=0.3",
        a.len()
    );
    // The same message ordinals give the same choice in any order.
    let mut forward = Faults::new(42, &spec);
    let mut backward = Faults::new(42, &spec);
    let f: Vec<bool> = (0..50)
        .map(|i| forward.judge(Protocol::Udp, [i, 0]).is_clean())
        .collect();
    let mut b: Vec<bool> = (0..50)
        .rev()
        .map(|i| backward.judge(Protocol::Udp, [i, 0]).is_clean())
        .collect();
    b.reverse();
    assert_eq!(f, b);
    let never = hits(
        &judge_udp(&mut Faults::new(1, &[parse("udp:drop,p=0")]), 200),
        FaultKind::Drop,
    );
    let always = hits(
        &judge_udp(&mut Faults::new(1, &[parse("udp:drop,p=1")]), 200),
        FaultKind::Drop,
    );
    assert_eq!((never.len(), always.len()), (0, 200));
}

#[test]
fn tcp_choices_depend_on_connection_and_message_ordinals() {
    let spec = [parse("tcp:close,p=0.5")];
    let mut a = Faults::new(7, &spec);
    let mut b = Faults::new(7, &spec);
    let grid = |f: &mut Faults| -> Vec<bool> {
        (0..20)
            .flat_map(|conn| (0..5).map(move |msg| [conn, msg]))
            .map(|o| f.judge(Protocol::Tcp, o).is_clean())
            .collect()
    };
    let ga = grid(&mut a);
    assert_eq!(ga, grid(&mut b));
    assert!(ga.iter().any(|&c| c) && ga.iter().any(|&c| !c));
}

#[test]
fn delays_add_up_within_their_ranges() {
    let mut faults = Faults::new(9, &[parse("udp:delay=10"), parse("udp:delay=100-200")]);
    let mut seen = std::collections::BTreeSet::new();
    for v in judge_udp(&mut faults, 500) {
        assert!((110..=210).contains(&v.delay_ms), "{}", v.delay_ms);
        assert_eq!(v.applied[0], 2, "both delays counted");
        seen.insert(v.delay_ms);
    }
    assert!(seen.len() > 50, "the range is used: {} values", seen.len());
}

#[test]
fn the_first_terminal_fault_replaces_the_reply_and_the_shapers() {
    let mut faults = Faults::new(
        1,
        &[
            parse("tcp:truncate=2"),
            parse("tcp:delay=5"),
            parse("tcp:close"),
            parse("tcp:reset"),
            parse("tcp:slow-close=9"),
        ],
    );
    let v = faults.judge(Protocol::Tcp, [0, 0]);
    assert_eq!(v.terminal, Some(FaultKind::Close));
    assert_eq!(v.delay_ms, 5, "the delay still comes first");
    assert_eq!((v.truncate, v.slow_close_ms), (None, None));
    let counted: Vec<&str> = FaultCounts::from_array(v.applied.map(u64::from))
        .by_kind()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(counted, ["delay", "close"]);
}

#[test]
fn shapers_compose_and_the_first_of_a_kind_wins() {
    let mut faults = Faults::new(
        1,
        &[
            parse("udp:truncate=3"),
            parse("udp:truncate=1"),
            parse("udp:corrupt"),
            parse("udp:duplicate"),
        ],
    );
    let v = faults.judge(Protocol::Udp, [0, 0]);
    assert_eq!(v.truncate, Some(3));
    assert!(v.corrupt.is_some() && v.duplicate && v.terminal.is_none());
    assert_eq!(FaultCounts::from_array(v.applied.map(u64::from)).total(), 3);
}

#[test]
fn corrupt_changes_every_byte_and_never_writes_a_newline() {
    for seed in 0..200 {
        let original = b"Received\n\n\xff\x00".to_vec();
        let mut text = original.clone();
        corrupt(&mut text, seed);
        for (a, b) in original.iter().zip(&text) {
            assert_ne!(a, b, "seed {seed}");
            assert_ne!(*b, b'\n', "seed {seed}");
        }
        let mut again = original.clone();
        corrupt(&mut again, seed);
        assert_eq!(text, again, "a function of the seed");
    }
}

#[test]
fn splitmix64_matches_the_reference_values() {
    // The reference generator's first outputs from state 0 (each output
    // is splitmix64 of the state before the increment).
    let mut state = 0u64;
    let mut next = || {
        let out = splitmix64(state);
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out
    };
    assert_eq!(next(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(next(), 0x6E78_9E6A_A1B9_65F4);
}

#[test]
fn decimals_are_parsed_by_hand() {
    assert_eq!(decimal("0.25", 3), Some(250));
    assert_eq!(decimal(".5", 3), Some(500));
    assert_eq!(decimal("3.", 3), Some(3000));
    assert_eq!(decimal("12", 0), Some(12));
    assert_eq!(decimal("0.123", 3), Some(123));
    for bad in [
        "",
        ".",
        "1.2345",
        "-1",
        "1e3",
        "nan",
        "1.2.3",
        " 1",
        "99999999999999999999",
    ] {
        assert_eq!(decimal(bad, 3), None, "{bad:?}");
    }
}

#[test]
fn probabilities_print_as_short_decimals() {
    for spec in [
        "udp:drop,p=0.3",
        "udp:drop,p=1",
        "udp:drop,p=0",
        "udp:drop,p=0.000000001",
    ] {
        assert_eq!(parse(spec).to_string(), spec);
    }
    assert_eq!(parse("udp:drop,p=.50").to_string(), "udp:drop,p=0.5");
}

#[test]
fn extreme_values_do_not_overflow() {
    let mut faults = Faults::new(1, &[parse("tcp:delay=0-18446744073709551615")]);
    faults.add(parse("tcp:delay=18446744073709551615")).unwrap();
    let v = faults.judge(Protocol::Tcp, [0, 0]);
    assert_eq!(v.delay_ms, u64::MAX, "delays saturate");
}

#[test]
fn sixty_four_selected_delays_add_up_and_are_all_counted() {
    let faults: Vec<Fault> = (0..MAX_FAULTS).map(|_| parse("udp:delay=10")).collect();
    let mut faults = Faults::new(1, &faults);
    let v = faults.judge(Protocol::Udp, [1, 0]);
    assert_eq!(v.delay_ms, 640);
    assert_eq!(v.applied[0], 64);
}

#[test]
fn adding_checks_the_fault_and_the_cap_and_changes_nothing_on_error() {
    let mut faults = Faults::new(1, &[]);
    let mut bad = parse("tcp:dribble=1/0");
    bad.kind = FaultKind::Dribble {
        bytes: 0,
        every_ms: 0,
    };
    assert!(faults.add(bad).is_err());
    assert!(!faults.any(Protocol::Tcp), "not in force");
    for _ in 0..MAX_FAULTS {
        faults.add(parse("udp:drop")).unwrap();
    }
    let error = faults.add(parse("tcp:close")).unwrap_err();
    assert!(error.starts_with("fault 'tcp:close': 64 faults"), "{error}");
    assert!(!faults.any(Protocol::Tcp), "not in force");
}

#[test]
fn a_match_selector_picks_the_messages_it_fits_and_every_counts_all() {
    let fault: Fault = r"udp:drop,match=prefix:x\x2cy,every=2".parse().unwrap();
    assert_eq!(
        fault.select.matches,
        Some(crate::Match::Prefix(b"x,y".to_vec())),
        "a comma in a match is written \\x2c"
    );
    assert_eq!(fault.to_string(), r"udp:drop,every=2,match=prefix:x\x2cy");
    let mut faults = Faults::new(1, &[fault]);
    let dropped: Vec<bool> = [&b"x,y1"[..], b"x,y2", b"other", b"x,y4", b"x,y5"]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let v = faults.judge_message(Protocol::Udp, Direction::Down, [i as u64 + 1, 0], m);
            v.terminal.is_some()
        })
        .collect();
    assert_eq!(dropped, [false, true, false, true, false]);
    for bad in [
        "tcp:reset,match=",
        "tcp:reset,match=nope",
        r"tcp:reset,match=exact:\q",
        "tcp:reset,match=exact:a,b",
    ] {
        let why = bad.parse::<Fault>().unwrap_err();
        assert!(why.contains(bad), "{why}");
    }
    let exact: Fault = r"tcp:reset,match=exact:\x20quit\r".parse().unwrap();
    assert_eq!(exact.to_string().parse::<Fault>(), Ok(exact));
}

#[test]
fn stream_kinds_need_a_stream_relay_and_are_judged_into_the_verdict() {
    for spec in [
        "tcp:bandwidth=5",
        "tcp:timeout=0",
        "tcp:reset-peer=1",
        "tcp:slicer=3",
    ] {
        let fault = parse(spec);
        assert!(fault.kind.needs_stream(), "{spec}");
        for relaying in [Relaying::Not, Relaying::Messages] {
            let refused = check_direction(&fault, |_| relaying).unwrap_err();
            assert!(refused.contains("relayed stream"), "{refused}");
        }
        assert!(check_direction(&fault, |_| Relaying::Streams).is_ok());
    }
    let faults = [
        "tcp:bandwidth=5",
        "tcp:timeout=7",
        "tcp:reset-peer=9",
        "tcp:slicer=3/1/20",
    ]
    .map(parse);
    let mut set = Faults::relaying(1, &faults, [Relaying::Streams, Relaying::Not]);
    let v = set.judge_in(Protocol::Tcp, Direction::Down, [0, 0]);
    assert_eq!(
        (v.bandwidth, v.timeout_ms, v.reset_peer_ms),
        (Some(5), Some(7), Some(9))
    );
    let slices = v.slicer.unwrap();
    assert_eq!(
        (slices.average, slices.variation, slices.delay_us),
        (3, 1, 20)
    );
    assert!((0..100).all(|n| (2..=4).contains(&slices.size(n))));
    let counted = FaultCounts::from_array(v.applied.map(u64::from));
    assert_eq!(
        (
            counted.bandwidth,
            counted.timeout,
            counted.reset_peer,
            counted.slicer
        ),
        (1, 1, 1, 1)
    );
    // A terminal fault replaces the stream: the shapers go.
    let mut set = Faults::relaying(
        1,
        &[parse("tcp:close"), parse("tcp:bandwidth=5")],
        [Relaying::Streams, Relaying::Not],
    );
    let v = set.judge_in(Protocol::Tcp, Direction::Down, [0, 0]);
    assert_eq!((v.bandwidth, v.applied.iter().sum::<u32>()), (None, 1));
}
