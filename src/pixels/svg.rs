//! SVG sources. Parsed with roxmltree under node, nesting and entity limits (external entities
//! are never resolved), refused when `<use>` references would multiply the document past a
//! bound, converted by usvg with only `data:` raster images (size-checked by our own probe;
//! no files, no network, no nested SVG) and rasterised by resvg at the size the plan asks
//! for: vectors are drawn at the target size, never scaled from a bitmap. SVG output is
//! usvg's re-serialisation, so only what usvg understands survives: no scripts, no event
//! handlers, no external references, no entities.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use image::DynamicImage;
use resvg::tiny_skia;
use resvg::usvg::{self, roxmltree};

use super::types::{DecodeError, Decoded, ProbeError, Prober, SourceInfo};
use crate::format::Format;

/// XML nodes (elements, text, attributes' owners) a document may have.
const MAX_NODES: u32 = 200_000;
/// Elements after expanding every `<use>`: what usvg would build and resvg draw.
const MAX_EXPANDED_ELEMENTS: u64 = 200_000;
/// Element nesting depth (usvg and resvg recurse over it).
const MAX_DEPTH: usize = 256;
/// Largest embedded raster image, pixels.
const MAX_EMBEDDED_PIXELS: u64 = 25_000_000;

/// Why an SVG was refused: a client's document, so always a 4xx.
fn refused(why: &'static str) -> ProbeError {
    ProbeError::Corrupt(Format::Svg, why)
}

fn parse(data: &[u8]) -> Result<roxmltree::Document<'_>, ProbeError> {
    let text = std::str::from_utf8(data).map_err(|_| refused("not UTF-8"))?;
    let opts = roxmltree::ParsingOptions {
        // Illustrator and friends declare namespace entities in an internal subset; roxmltree
        // bounds entity expansion (depth 10, 255 references each) and resolves no external
        // entity without a resolver, which we never give it.
        allow_dtd: true,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => refused("too many XML nodes"),
        roxmltree::Error::EntityReferenceLoop(_) => refused("entity expansion limit"),
        _ => refused("malformed XML"),
    })?;
    if doc.root_element().tag_name().name() != "svg" {
        return Err(refused("the root element is not <svg>"));
    }
    check_expansion(&doc)?;
    Ok(doc)
}

/// Counts the elements the document becomes once every `<use>` is replaced by what it
/// references (recursively), without building it: memoised per referenced element.
fn check_expansion(doc: &roxmltree::Document<'_>) -> Result<(), ProbeError> {
    use std::collections::HashMap;
    let ids: HashMap<&str, roxmltree::NodeId> = doc
        .descendants()
        .filter_map(|n| Some((n.attribute("id")?, n.id())))
        .collect();
    // None while being counted: a reference cycle, which usvg skips, counts as nothing.
    let mut memo: HashMap<roxmltree::NodeId, Option<u64>> = HashMap::new();
    fn cost(
        n: roxmltree::Node<'_, '_>,
        depth: usize,
        ids: &HashMap<&str, roxmltree::NodeId>,
        memo: &mut HashMap<roxmltree::NodeId, Option<u64>>,
    ) -> Result<u64, ProbeError> {
        if depth > MAX_DEPTH {
            return Err(refused("elements nested too deeply"));
        }
        if let Some(known) = memo.get(&n.id()) {
            return Ok(known.unwrap_or(0));
        }
        memo.insert(n.id(), None);
        let mut total = 1u64;
        for c in n.children().filter(|c| c.is_element()) {
            total = total.saturating_add(cost(c, depth + 1, ids, memo)?);
        }
        if n.tag_name().name() == "use" {
            let href = n
                .attribute(("http://www.w3.org/1999/xlink", "href"))
                .or_else(|| n.attribute("href"));
            if let Some(target) = href
                .and_then(|h| h.strip_prefix('#'))
                .and_then(|id| ids.get(id))
                .and_then(|&id| n.document().get_node(id))
            {
                total = total.saturating_add(cost(target, depth + 1, ids, memo)?);
            }
        }
        if total > MAX_EXPANDED_ELEMENTS {
            return Err(refused("<use> references expand past the element limit"));
        }
        memo.insert(n.id(), Some(total));
        Ok(total)
    }
    cost(doc.root_element(), 0, &ids, &mut memo).map(|_| ())
}

/// The document's size in CSS pixels, as usvg computes it: `width`/`height` in absolute
/// units, else the `viewBox` size, else 100.
fn size(doc: &roxmltree::Document<'_>) -> (f64, f64) {
    let root = doc.root_element();
    let view_box = root
        .attribute("viewBox")
        .and_then(|v| svgtypes::ViewBox::from_str(v).ok())
        .filter(|v| v.w > 0.0 && v.h > 0.0);
    let side = |name: &str, from_box: Option<f64>| -> f64 {
        use svgtypes::LengthUnit as U;
        let fallback = from_box.unwrap_or(100.0);
        let Some(len) = root
            .attribute(name)
            .and_then(|v| svgtypes::Length::from_str(v).ok())
        else {
            return fallback;
        };
        let n = len.number;
        match len.unit {
            U::None | U::Px => n,
            U::In => n * 96.0,
            U::Cm => n * 96.0 / 2.54,
            U::Mm => n * 96.0 / 25.4,
            U::Pt => n * 4.0 / 3.0,
            U::Pc => n * 16.0,
            U::Em => n * 12.0,
            U::Ex => n * 6.0,
            U::Percent => fallback * n / 100.0,
        }
    };
    let w = side("width", view_box.map(|v| v.w));
    let h = side("height", view_box.map(|v| v.h));
    (w, h)
}

pub fn probe(data: &[u8]) -> Result<SourceInfo, ProbeError> {
    let doc = parse(data)?;
    let (w, h) = size(&doc);
    if !(w.is_finite() && h.is_finite() && w >= 0.5 && h >= 0.5) {
        return Err(refused("zero or invalid width or height"));
    }
    let clamp = |v: f64| v.round().min(f64::from(u32::MAX)) as u32;
    let mut info = SourceInfo::new(Format::Svg, clamp(w), clamp(h));
    info.has_alpha = true;
    Ok(info)
}

/// System fonts, loaded once per process (text is drawn with what the machine has).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            Arc::new(db)
        })
        .clone()
}

fn options(probe: Prober) -> usvg::Options<'static> {
    let embedded = move |_mime: &str, data: Arc<Vec<u8>>, _: &usvg::Options| {
        // Only raster formats, checked from their header like any source; nested SVG and
        // anything else is dropped.
        let info = probe(&data).ok()?;
        if info.pixels() > MAX_EMBEDDED_PIXELS {
            return None;
        }
        Some(match info.format {
            Format::Png => usvg::ImageKind::PNG(data),
            Format::Jpeg => usvg::ImageKind::JPEG(data),
            Format::Gif => usvg::ImageKind::GIF(data),
            Format::Webp => usvg::ImageKind::WEBP(data),
            _ => return None,
        })
    };
    usvg::Options {
        resources_dir: None,
        image_href_resolver: usvg::ImageHrefResolver {
            resolve_data: Box::new(embedded),
            // Paths and URLs: never read a file or open a connection.
            resolve_string: Box::new(|_, _| None),
        },
        fontdb: fonts(),
        ..usvg::Options::default()
    }
}

fn tree(data: &[u8], probe: Prober) -> Result<usvg::Tree, DecodeError> {
    let doc = parse(data).map_err(|e| DecodeError::Corrupt(Format::Svg, e.to_string()))?;
    usvg::Tree::from_xmltree(&doc, &options(probe))
        .map_err(|e| DecodeError::Corrupt(Format::Svg, e.to_string()))
}

/// Rasterises the document to exactly `width` × `height` (straight RGBA); embedded raster
/// images are kept when `probe` accepts them.
pub fn render(data: &[u8], width: u32, height: u32, probe: Prober) -> Result<Decoded, DecodeError> {
    let tree = tree(data, probe)?;
    let mut pixmap = tiny_skia::Pixmap::new(width.max(1), height.max(1))
        .ok_or_else(|| DecodeError::Corrupt(Format::Svg, "render size".into()))?;
    let size = tree.size();
    let scale = tiny_skia::Transform::from_scale(
        width.max(1) as f32 / size.width(),
        height.max(1) as f32 / size.height(),
    );
    resvg::render(&tree, scale, &mut pixmap.as_mut());
    let mut px = Vec::with_capacity(pixmap.data().len());
    for p in pixmap.pixels() {
        let c = p.demultiply();
        px.extend_from_slice(&[c.red(), c.green(), c.blue(), c.alpha()]);
    }
    let image = image::RgbaImage::from_raw(pixmap.width(), pixmap.height(), px)
        .map(DynamicImage::ImageRgba8)
        .ok_or_else(|| DecodeError::Corrupt(Format::Svg, "short buffer".into()))?;
    Ok(Decoded {
        image,
        icc: None,
        exif: None,
    })
}

/// The document re-serialised from usvg's tree: safe to serve as `image/svg+xml`.
pub fn sanitize(data: &[u8], probe: Prober) -> Result<Vec<u8>, DecodeError> {
    Ok(tree(data, probe)?
        .to_string(&usvg::WriteOptions::default())
        .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_units_and_view_box() {
        let sz = |s: &str| {
            let info = probe(s.as_bytes()).unwrap();
            (info.width, info.height)
        };
        assert_eq!(sz(r#"<svg width="10mm" height="1in"/>"#), (38, 96));
        assert_eq!(sz(r#"<svg viewBox="0 0 640 480"/>"#), (640, 480));
        assert_eq!(
            sz(r#"<svg width="50%" viewBox="0 0 640 480"/>"#),
            (320, 480)
        );
        assert_eq!(sz(r#"<svg/>"#), (100, 100));
        assert!(probe(br#"<svg width="0" height="5"/>"#).is_err());
    }

    #[test]
    fn use_amplification_is_refused() {
        let mut s = String::from(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><g id="a0"><rect width="1" height="1"/></g>"#,
        );
        for i in 1..12 {
            s.push_str(&format!(r##"<g id="a{i}">"##));
            for _ in 0..10 {
                s.push_str(&format!(r##"<use xlink:href="#a{}"/>"##, i - 1));
            }
            s.push_str("</g>");
        }
        s.push_str("</svg>");
        let e = probe(s.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("<use>"), "{e}");
        // A reference cycle is not an explosion (usvg skips it).
        let cycle = r##"<svg xmlns:xlink="http://www.w3.org/1999/xlink"><g id="a"><use xlink:href="#a"/></g></svg>"##;
        assert!(probe(cycle.as_bytes()).is_ok());
    }
}
