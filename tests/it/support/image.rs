//! Images in and out of tests: results decoded with decoders other than pixgate's pipeline,
//! pixel differences, encoded test pictures and doctored fixtures.

use super::fixtures::read;

/// `img` as PNG bytes.
pub fn png<P, C>(img: &image::ImageBuffer<P, C>) -> Vec<u8>
where
    P: image::PixelWithColorType,
    C: std::ops::Deref<Target = [P::Subpixel]>,
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Decodes an encoded result with a decoder other than pixgate's pipeline: the `image` crate;
/// for AVIF, libavif + dav1d (the reference implementation, which our build links); for
/// SVG, resvg drawing the document at its own size.
pub fn decode(bytes: &[u8]) -> image::DynamicImage {
    match pixgate::pixels::probe::probe(bytes) {
        Ok(info) if info.format == pixgate::Format::Avif => {
            pixgate::pixels::avif::decode(bytes, &info, 0)
                .expect("result decodes")
                .image
        }
        Ok(info) if info.format == pixgate::Format::Svg => {
            let tree = resvg::usvg::Tree::from_data(bytes, &resvg::usvg::Options::default())
                .expect("result parses");
            let size = tree.size().to_int_size();
            let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
            resvg::render(&tree, Default::default(), &mut pixmap.as_mut());
            let px = pixmap
                .pixels()
                .iter()
                .flat_map(|p| {
                    let c = p.demultiply();
                    [c.red(), c.green(), c.blue(), c.alpha()]
                })
                .collect();
            image::DynamicImage::ImageRgba8(
                image::RgbaImage::from_raw(size.width(), size.height(), px).unwrap(),
            )
        }
        other => image::load_from_memory(bytes)
            .unwrap_or_else(|e| panic!("result decodes: {e} (probe: {other:?})")),
    }
}

/// Mean and maximum absolute difference per channel of two same-size RGBA images.
pub fn diff(a: &image::RgbaImage, b: &image::RgbaImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / a.as_raw().len().max(1) as f64, max)
}

/// A real AVIF (768x512) whose first `ispe` (image spatial extents) property claims
/// another size.
pub fn avif_with_ispe(w: u32, h: u32) -> Vec<u8> {
    let mut out = read("conformance/avif/libavif-testdata/io/kodim23_yuv420_8bpc.avif");
    let at = out.windows(4).position(|x| x == b"ispe").expect("ispe");
    out[at + 8..at + 12].copy_from_slice(&w.to_be_bytes());
    out[at + 12..at + 16].copy_from_slice(&h.to_be_bytes());
    out
}
