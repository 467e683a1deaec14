//! Unit tests of the option grammar: every must-have option's valid and invalid forms,
//! presets, and canonical-form equality.

use super::*;

fn ctx_with<'a>(presets: &'a Presets, defaults: &'a Options) -> ParseContext<'a> {
    ParseContext {
        presets,
        allow_security_options: false,
        now_unix: 1_700_000_000,
        defaults,
    }
}

fn p(s: &str) -> Result<Options, OptionsError> {
    let presets = Presets::default();
    let d = Options::default();
    parse(s, &ctx_with(&presets, &d))
}

fn ok(s: &str) -> Options {
    p(s).unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
}

fn bad(s: &str) {
    match p(s) {
        Err(OptionsError::SecurityOption(_)) => panic!("`{s}`: expected a 404-class error"),
        Err(_) => {}
        Ok(o) => panic!("`{s}` should fail, got {o:?}"),
    }
}

#[test]
fn resize_meta_option() {
    let o = ok("rs:fill:300:200:1:1:so:5:6");
    assert_eq!(o.resizing_type, ResizingType::Fill);
    assert_eq!((o.width, o.height, o.enlarge), (300, 200, true));
    assert!(o.extend.enabled);
    assert_eq!(o.extend.gravity.kind, GravityType::South);
    assert_eq!((o.extend.gravity.x, o.extend.gravity.y), (5.0, 6.0));
    assert_eq!(ok("resize:fit:10:20"), ok("rs:fit:10:20"));
    // Empty arguments keep defaults (and earlier values).
    let o = ok("w:50/rs:::80");
    assert_eq!(
        (o.resizing_type, o.width, o.height),
        (ResizingType::Fit, 50, 80)
    );
    assert_eq!(ok("rs:fill-down").resizing_type, ResizingType::FillDown);
    assert_eq!(ok("rs:force:1:2").resizing_type, ResizingType::Force);
    assert_eq!(ok("rs:auto").resizing_type, ResizingType::Auto);
    bad("rs:squash:1:1");
    bad("rs:fit:-1:0");
    bad("rs:fit:a:0");
    bad("rs:fit:1:1:1:1:ce:1:1:extra");
    bad("rs:fit:1:1:1:1:sm");
}

#[test]
fn size_and_dimensions() {
    let o = ok("s:100:200:t");
    assert_eq!((o.width, o.height, o.enlarge), (100, 200, true));
    assert_eq!(ok("size:1:2"), ok("s:1:2"));
    assert_eq!(ok("w:7").width, 7);
    assert_eq!(ok("width:7"), ok("w:7"));
    assert_eq!(ok("h:9").height, 9);
    assert_eq!(ok("height:9"), ok("h:9"));
    assert_eq!(ok("mw:30").min_width, 30);
    assert_eq!(ok("min-width:30"), ok("mw:30"));
    assert_eq!(ok("mh:31").min_height, 31);
    assert_eq!(ok("min-height:31"), ok("mh:31"));
    bad("min_width:30");
    bad("w:-3");
    bad("w:1.5");
    bad("w:");
    bad("w:1:2");
    bad("s:1:2:1:1:ce:0:0:9");
    assert_eq!(ok("rt:fill").resizing_type, ResizingType::Fill);
    assert_eq!(ok("resizing_type:fill"), ok("rt:fill"));
    bad("rt:");
    bad("rt:fill:fit");
}

#[test]
fn zoom_dpr_enlarge() {
    let o = ok("z:1.5");
    assert_eq!((o.zoom_x, o.zoom_y), (1.5, 1.5));
    let o = ok("zoom:2:0.5");
    assert_eq!((o.zoom_x, o.zoom_y), (2.0, 0.5));
    assert_eq!(ok("z:1e1").zoom_x, 10.0);
    bad("z:0");
    bad("z:-1");
    bad("z:1:2:3");
    bad("z:nan");
    assert_eq!(ok("dpr:2").dpr, 2.0);
    assert_eq!(ok("dpr:.5").dpr, 0.5);
    bad("dpr:0");
    bad("dpr:x");
    assert!(ok("el:1").enlarge);
    assert!(ok("enlarge:true").enlarge);
    for f in ["0", "f", "F", "FALSE", "false", "False", "yes", "2", "on"] {
        assert!(!ok(&format!("el:{f}")).enlarge, "el:{f} must be false");
    }
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert!(ok(&format!("el:{t}")).enlarge, "el:{t} must be true");
    }
    bad("el:1:1");
}

#[test]
fn extend_and_extend_aspect_ratio() {
    let o = ok("ex:1:noea:3:4");
    assert!(o.extend.enabled);
    assert_eq!(o.extend.gravity.kind, GravityType::NorthEast);
    assert_eq!(ok("extend:1"), ok("ex:1:ce"));
    let o = ok("exar:1:fp:0.2:0.8");
    assert!(o.extend_aspect_ratio.enabled);
    assert_eq!(o.extend_aspect_ratio.gravity.kind, GravityType::FocusPoint);
    assert_eq!(ok("extend_ar:1"), ok("exar:1"));
    assert_eq!(ok("extend_aspect_ratio:1"), ok("exar:1"));
    bad("ex:1:sm");
    bad("ex:1:re");
    bad("ex:1:ce:1:2:3");
    bad("ex:1:up");
}

#[test]
fn gravity_forms() {
    let o = ok("g:we:10:0.5");
    assert_eq!(o.gravity.kind, GravityType::West);
    assert_eq!((o.gravity.x, o.gravity.y), (10.0, 0.5));
    for (s, k) in [
        ("no", GravityType::North),
        ("so", GravityType::South),
        ("ea", GravityType::East),
        ("we", GravityType::West),
        ("noea", GravityType::NorthEast),
        ("nowe", GravityType::NorthWest),
        ("soea", GravityType::SouthEast),
        ("sowe", GravityType::SouthWest),
        ("ce", GravityType::Center),
        ("sm", GravityType::Smart),
    ] {
        assert_eq!(ok(&format!("g:{s}")).gravity.kind, k);
    }
    let o = ok("gravity:fp:0.3:0.7");
    assert_eq!((o.gravity.x, o.gravity.y), (0.3, 0.7));
    bad("g:fp:0.3");
    bad("g:fp:1.5:0.5");
    bad("g:fp:0.5:-0.1");
    bad("g:fp:0.1:0.2:0.3");
    bad("g:sm:1");
    bad("g:re");
    bad("g:ce:1:2:3");
    bad("g:ce:x");
    bad("g:middle");
}

#[test]
fn crop_forms() {
    let c = ok("c:100:0.5").crop.unwrap();
    assert_eq!((c.width, c.height, c.gravity), (100.0, 0.5, None));
    let c = ok("crop:10:20:nowe:1:2").crop.unwrap();
    assert_eq!(c.gravity.unwrap().kind, GravityType::NorthWest);
    assert_eq!(ok("c:1:1:fp:0.5:0.5").crop.unwrap().gravity.unwrap().x, 0.5);
    bad("c:100");
    bad("c:-1:5");
    bad("c:1:1:ce:1:1:1");
    bad("c:1:1:re");
}

#[test]
fn trim_padding_rotation_flip() {
    let t = ok("t:10:ff00ff:1:0").trim.unwrap();
    assert_eq!(t.threshold, 10.0);
    assert_eq!(t.color, Some(Rgb(255, 0, 255)));
    assert!(t.equal_hor && !t.equal_ver);
    assert_eq!(ok("trim:5").trim.unwrap().color, None);
    bad("t:");
    bad("t:-1");
    bad("t:1:zzz");
    bad("t:1:fff:1:1:1");

    let o = ok("pd:10");
    assert_eq!(
        o.padding,
        Padding {
            top: 10,
            right: 10,
            bottom: 10,
            left: 10
        }
    );
    let o = ok("padding:1:2");
    assert_eq!(
        (o.padding.right, o.padding.left, o.padding.bottom),
        (2, 2, 1)
    );
    let o = ok("pd:1:2:3:4");
    assert_eq!(
        o.padding,
        Padding {
            top: 1,
            right: 2,
            bottom: 3,
            left: 4
        }
    );
    assert_eq!(ok("pd:0"), ok(""));
    bad("pd:1:2:3:4:5");
    bad("pd:-1");

    assert!(!ok("ar:0").auto_rotate);
    assert!(!ok("auto_rotate:false").auto_rotate);
    assert_eq!(ok("rot:90").rotate, 90);
    assert_eq!(ok("rotate:-90").rotate, 270);
    assert_eq!(ok("rot:450").rotate, 90);
    assert_eq!(ok("rot:360"), ok(""));
    bad("rot:45");
    bad("rot:x");
    let o = ok("fl:1:1");
    assert!(o.flip_horizontal && o.flip_vertical);
    let o = ok("flip::1");
    assert!(!o.flip_horizontal && o.flip_vertical);
    bad("fl:1:1:1");
}

#[test]
fn background_and_filters() {
    assert_eq!(ok("bg:fff").background, Some(Rgb(255, 255, 255)));
    assert_eq!(ok("bg:FF8000").background, Some(Rgb(255, 128, 0)));
    assert_eq!(ok("background:1:2:3").background, Some(Rgb(1, 2, 3)));
    assert_eq!(ok("bg:fff/bg:").background, None);
    bad("bg:ffff");
    bad("bg:1:2");
    bad("bg:1:2:256");
    bad("bg:#fff");
    assert_eq!(ok("bl:2.5").blur, 2.5);
    assert_eq!(ok("blur:1"), ok("bl:1"));
    bad("bl:-1");
    assert_eq!(ok("sh:0.7").sharpen, 0.7);
    assert_eq!(ok("sharpen:1"), ok("sh:1"));
    bad("sh:x");
    assert_eq!(ok("pix:8").pixelate, 8);
    assert_eq!(ok("pixelate:8"), ok("pix:8"));
    bad("pix:1.5");
}

#[test]
fn watermark_forms() {
    let w = ok("wm:0.5:soea:10:20:0.2").watermark.unwrap();
    assert_eq!(w.opacity, 0.5);
    assert_eq!(w.position, GravityType::SouthEast);
    assert_eq!((w.x, w.y, w.scale), (10.0, 20.0, 0.2));
    assert_eq!(
        ok("watermark:1:re").watermark.unwrap().position,
        GravityType::Replicate
    );
    assert_eq!(ok("wm:0").watermark, None);
    bad("wm:1.5");
    bad("wm:0.5:sm");
    bad("wm:0.5:ce:x");
    bad("wm:0.5:ce:0:0:-1");
    // npm `imgproxy` emits `undefined` for missing parts; imgproxy refuses it too.
    bad("wm:0.5:undefined::undefined");
}

#[test]
fn metadata_and_quality() {
    assert!(!ok("sm:0").strip_metadata);
    assert!(!ok("strip_metadata:f").strip_metadata);
    assert!(!ok("kcr:0").keep_copyright);
    assert!(!ok("keep_copyright:0").keep_copyright);
    assert!(!ok("scp:0").strip_color_profile);
    assert!(!ok("strip_color_profile:0").strip_color_profile);
    assert!(ok("eth:1").enforce_thumbnail);
    assert_eq!(ok("q:75").quality, 75);
    assert_eq!(ok("quality:75"), ok("q:75"));
    bad("q:101");
    bad("q:-1");
    bad("q:");
    let o = ok("fq:webp:60:jpg:70");
    assert_eq!(o.format_quality.get(&Format::Webp), Some(&60));
    assert_eq!(o.format_quality.get(&Format::Jpeg), Some(&70));
    assert_eq!(ok("format_quality:jpeg:70"), ok("fq:jpg:70"));
    bad("fq:webp");
    bad("fq:webp:60:jpg");
    bad("fq:bogus:60");
    bad("fq:webp:101");
    assert_eq!(ok("mb:1000").max_bytes, 1000);
    assert_eq!(ok("max_bytes:1000"), ok("mb:1000"));
    bad("mb:-5");
}

#[test]
fn format_and_friends() {
    assert_eq!(ok("f:webp").format, Some(Format::Webp));
    assert_eq!(ok("format:jpeg").format, Some(Format::Jpeg));
    assert_eq!(ok("ext:png").format, Some(Format::Png));
    assert_eq!(
        ok("f:avif/f:png").format,
        Some(Format::Png),
        "later overrides earlier"
    );
    bad("f:best");
    bad("f:mp4");
    bad("f:JPG");
    assert_eq!(
        ok("skp:png:jpg").skip_processing,
        vec![Format::Jpeg, Format::Png]
    );
    assert_eq!(ok("skip_processing:jpg:png"), ok("skp:png:jpg"));
    bad("skp:svgz");
    assert!(ok("raw:1").raw);
    assert_eq!(ok("cb:abc").cachebuster, "abc");
    assert_eq!(ok("cachebuster:abc"), ok("cb:abc"));
    bad("cb:a:b");
    assert_eq!(ok("fn:cat").filename.as_deref(), Some("cat"));
    assert_eq!(
        ok("filename:Y2F0LnBuZw:1").filename.as_deref(),
        Some("cat.png")
    );
    assert_eq!(ok("fn:Y2F0LnBuZw==:t").filename.as_deref(), Some("cat.png"));
    bad("fn:***:1");
    bad("fn:a:1:2");
    assert!(ok("att:1").return_attachment);
    assert!(ok("return_attachment:1").return_attachment);
}

#[test]
fn expires() {
    assert_eq!(ok("exp:1800000000").expires, Some(1_800_000_000));
    assert_eq!(ok("expires:0").expires, None);
    assert_eq!(p("exp:1600000000"), Err(OptionsError::Expired));
    bad("exp:soon");
}

#[test]
fn security_options_need_permission() {
    for s in ["msr:10", "msfs:100", "maf:5", "mafr:2", "mrd:1000"] {
        assert!(
            matches!(p(s), Err(OptionsError::SecurityOption(_))),
            "{s} must be refused"
        );
    }
    let presets = Presets::default();
    let d = Options::default();
    let mut ctx = ctx_with(&presets, &d);
    ctx.allow_security_options = true;
    let o = parse(
        "max_src_resolution:10/msfs:100/maf:5/mafr:2/max_result_dimension:1000",
        &ctx,
    )
    .unwrap();
    assert_eq!(o.security.max_src_resolution, Some(10.0));
    assert_eq!(o.security.max_src_file_size, Some(100));
    assert_eq!(o.security.max_animation_frames, Some(5));
    assert_eq!(o.security.max_animation_frame_resolution, Some(2.0));
    assert_eq!(o.security.max_result_dimension, Some(1000));
    assert!(parse("msr:0", &ctx).is_err());
    assert!(parse("maf:0", &ctx).is_err());
    assert!(parse("mrd:-1", &ctx).is_err());
}

#[test]
fn beyond_open_source_options() {
    assert_eq!(ok("car:1.5:1").crop_aspect_ratio, Some((1.5, true)));
    assert_eq!(ok("crop_ar:2"), ok("car:2:0"));
    let o = ok("a:10:1.2:0.8");
    assert_eq!((o.brightness, o.contrast, o.saturation), (10, 1.2, 0.8));
    assert_eq!(ok("br:-20").brightness, -20);
    bad("br:300");
    assert_eq!(ok("co:1.5").contrast, 1.5);
    assert_eq!(ok("sa:0").saturation, 0.0);
    assert_eq!(
        ok("mc:0.5:ff0000").monochrome.unwrap().color,
        Rgb(255, 0, 0)
    );
    bad("mc:2");
    assert_eq!(ok("bga:0.5").background_alpha, 0.5);
    bad("bga:1.5");
    let aq = ok("aq:dssim:0.02:60:90").autoquality.unwrap();
    assert_eq!(aq.target, Some(0.02));
    assert_eq!((aq.min_quality, aq.max_quality), (Some(60), Some(90)));
    bad("aq:magic");
}

#[test]
fn unknown_and_malformed() {
    bad("nope:1");
    bad("resizing_algorithm:lanczos3");
    bad("obj_pos:1");
    bad("plain");
    bad("RS:fit:1:1");
    assert_eq!(
        ok("rs:fit:1:1/"),
        ok("rs:fit:1:1"),
        "empty segments are skipped"
    );
}

#[test]
fn unsupported_options_are_named() {
    assert_eq!(ok("raw:1").unsupported(), Some("raw"));
    assert_eq!(ok("eth:1").unsupported(), Some("enforce_thumbnail"));
    assert_eq!(ok("aq:ml").unsupported(), Some("autoquality:ml"));
    assert_eq!(ok("rs:fill:100:100/g:no/q:50/f:webp").unsupported(), None);
    for landed in [
        "g:sm",
        "c:10:10:sm",
        "t:10",
        "wm:0.5",
        "bga:0.5",
        "car:1.5",
        "aq:dssim",
        "aq:size:1000",
        "pix:4",
        "mb:100",
        "br:10",
        "co:1.5",
        "sa:0",
        "mc:1",
        "a:1:1:1",
    ] {
        assert_eq!(ok(landed).unsupported(), None, "{landed}");
    }
}

fn presets(defs: &[(&str, &str)]) -> Presets {
    let map = defs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Presets::parse(&map).unwrap()
}

#[test]
fn presets_expand_inline_and_recursion_is_skipped() {
    let ps = presets(&[
        ("thumb", "rs:fill:300:300/q:75"),
        ("sharp", "sh:0.7/pr:thumb"),
        ("loop_a", "pr:loop_b/w:11"),
        ("loop_b", "pr:loop_a/h:12"),
    ]);
    let d = Options::default();
    let ctx = ctx_with(&ps, &d);
    let o = parse("pr:thumb/q:60", &ctx).unwrap();
    assert_eq!((o.width, o.height, o.quality), (300, 300, 60));
    let o = parse("q:60/preset:thumb", &ctx).unwrap();
    assert_eq!(o.quality, 75, "preset applies where it appears");
    let o = parse("pr:sharp", &ctx).unwrap();
    assert_eq!((o.sharpen, o.width), (0.7, 300));
    let o = parse("pr:loop_a", &ctx).unwrap();
    assert_eq!((o.width, o.height), (11, 12));
    let o = parse("pr:thumb:sharp", &ctx).unwrap();
    assert_eq!(o.sharpen, 0.7);
    assert_eq!(
        parse("pr:missing", &ctx),
        Err(OptionsError::UnknownPreset("missing".into()))
    );
}

#[test]
fn default_preset_applies_first() {
    let ps = presets(&[("default", "q:50/rt:fill"), ("big", "w:1000")]);
    let d = Options::default();
    let ctx = ctx_with(&ps, &d);
    let o = parse("w:10", &ctx).unwrap();
    assert_eq!(
        (o.quality, o.resizing_type, o.width),
        (50, ResizingType::Fill, 10)
    );
    let o = parse("q:90", &ctx).unwrap();
    assert_eq!(o.quality, 90);
    let o = parse_presets_only("big", &ctx).unwrap();
    assert_eq!((o.quality, o.width), (50, 1000));
    assert!(parse_presets_only("big:nope", &ctx).is_err());
}

#[test]
fn presets_are_validated_at_startup() {
    let bad_defs = BTreeMap::from([
        ("a".to_string(), "rs:fit:x".to_string()),
        ("b".to_string(), "plain".to_string()),
        ("c".to_string(), "pr:zzz".to_string()),
    ]);
    let problems = Presets::parse(&bad_defs).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn canonical_form_is_shared_by_equivalent_strings() {
    let groups: &[&[&str]] = &[
        &[
            "rs:fill:300:200/g:fp:0.3:0.7/q:75/f:webp",
            "resize:fill:300:200/gravity:fp:0.3:0.7/quality:75/format:webp",
            "f:webp/q:75/g:fp:0.3:0.7/rt:fill/w:300/h:200",
            "w:1/h:1/rs:fill:300:200:0/g:fp:.3:.7/q:75/ext:webp",
            "rs:fill:300:200/g:fp:0.3:0.7/q:75/f:webp/el:0/z:1/dpr:1/ar:1/rot:0",
        ],
        &[
            "", "rt:fit", "el:0", "g:ce", "g:ce:0:0", "bg:", "pd:0", "sm:1", "q:0", "fl:0:0",
        ],
        &["q:80/fq:webp:70:jpg:60", "fq:jpeg:60:webp:70/quality:80"],
        &["pd:5", "pd:5:5:5:5", "padding:5::5"],
        &["bg:fff", "bg:ffffff", "bg:255:255:255", "background:FFF"],
        &["rot:-90", "rot:270", "rotate:630"],
        &["z:2", "z:2:2", "zoom:2.0"],
        &["fn:cat.png", "fn:Y2F0LnBuZw:1"],
    ];
    for group in groups {
        let forms: Vec<String> = group.iter().map(|s| ok(s).canonical()).collect();
        for (s, f) in group.iter().zip(&forms) {
            assert_eq!(f, &forms[0], "`{s}` and `{}` differ", group[0]);
        }
    }
    assert_ne!(ok("w:300").canonical(), ok("w:301").canonical());
    assert_ne!(ok("cb:1").canonical(), ok("cb:2").canonical());
}

#[test]
fn canonical_form_parses_back_to_the_same_options() {
    let presets = Presets::default();
    let d = Options::default();
    let mut ctx = ctx_with(&presets, &d);
    ctx.allow_security_options = true;
    for s in [
        "rs:fill-down:300:200:1:1:soea:5:0.25/mw:10/mh:20/z:1.5:2/dpr:2",
        "exar:1:fp:0.1:0.9/g:nowe:3:4/c:0.5:100:ea/t:5:ff0000:1:0/pd:1:2:3:4",
        "ar:0/rot:180/fl:1:0/bg:10:20:30/bl:1.5/sh:0.3/pix:4/wm:0.4:re:10:10:0.5",
        "sm:0/kcr:0/scp:0/eth:1/q:55/fq:avif:40:png:90/mb:5000/f:gif/skp:jpg:webp",
        "raw:1/cb:v2/exp:1900000000/fn:a:b c/att:1/msr:12.5/msfs:99/maf:3/mafr:1/mrd:640",
        "car:1.777:1/a:-10:1.1:0.9/mc:0.7:00ff00/bga:0.25/aq:dssim:0.01::95:",
    ] {
        let o = parse(s, &ctx).unwrap();
        let c = o.canonical();
        let back = parse(&c, &ctx).unwrap_or_else(|e| panic!("`{c}` does not parse: {e}"));
        assert_eq!(back, o, "round trip of `{s}` via `{c}`");
        assert_eq!(back.canonical(), c);
    }
}
