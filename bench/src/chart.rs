//! The PNG chart next to each load scenario's Markdown: latency p50/p99/p99.9
//! and proxy CPU µs per request per row, drawn with plotters (bitmap backend,
//! DejaVu Sans loaded from disk so no fontconfig lookup is needed).

use crate::report::ChartRow;
use crate::Res;
use std::path::Path;

/// Debian's `fonts-dejavu-core`; installed by the harness when missing.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws `data` (one entry per row) to `path`.
pub fn chart(path: &Path, title: &str, data: &[ChartRow]) -> Res<()> {
    use plotters::prelude::*;
    let font: &'static [u8] = Box::leak(
        std::fs::read(FONT)
            .map_err(|e| format!("{FONT}: {e}"))?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "bad font".to_string())?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(800);
    let n = data.len();
    let names: Vec<String> = data.iter().map(|d| d.0.clone()).collect();
    let colors = [
        RGBColor(70, 130, 180),
        RGBColor(255, 140, 0),
        RGBColor(178, 34, 34),
    ];

    // Left: latency percentiles, grouped bars per proxy.
    let ymax = data
        .iter()
        .map(|d| d.1.max(d.2).max(d.3))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.15;
    let mut c = ChartBuilder::on(&left)
        .caption(
            "latency (ms): p50 / p99 / p99.9, median of repeats",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(|x| e(&x))?;
    let nm = names.clone();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < nm.len() {
                nm[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("ms")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(&x))?;
    for (k, label) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let col = colors[k];
        c.draw_series(data.iter().enumerate().map(|(i, d)| {
            let v = [d.1, d.2, d.3][k];
            let x0 = i as f64 + 0.15 + k as f64 * 0.23;
            Rectangle::new([(x0, 0.0), (x0 + 0.2, v)], col.filled())
        }))
        .map_err(|x| e(&x))?
        .label(*label)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        c.draw_series(data.iter().enumerate().map(|(i, d)| {
            let v = [d.1, d.2, d.3][k];
            let x0 = i as f64 + 0.15 + k as f64 * 0.23;
            Text::new(
                format!("{v:.2}"),
                (x0, v + ymax * 0.035),
                ("sans-serif", 11),
            )
        }))
        .map_err(|x| e(&x))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;

    // Right: CPU µs per request.
    let cpu: Vec<(usize, &String, f64)> = data
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.4.map(|v| (i, &d.0, v)))
        .collect();
    let cmax = cpu.iter().map(|c| c.2).fold(0.0, f64::max).max(0.001) * 1.2;
    let mut c = ChartBuilder::on(&right)
        .caption(
            "proxy CPU µs per request (lower is better)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..cpu.len().max(1) as f64, 0f64..cmax)
        .map_err(|x| e(&x))?;
    let cn: Vec<String> = cpu.iter().map(|c| c.1.clone()).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(cpu.len() * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < cn.len() {
                cn[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("µs / request")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(&x))?;
    c.draw_series(cpu.iter().enumerate().map(|(j, _)| {
        Rectangle::new(
            [(j as f64 + 0.2, 0.0), (j as f64 + 0.8, cpu[j].2)],
            RGBColor(46, 139, 87).filled(),
        )
    }))
    .map_err(|x| e(&x))?;
    c.draw_series(cpu.iter().enumerate().map(|(j, c)| {
        Text::new(
            format!("{:.2}", c.2),
            (j as f64 + 0.35, c.2 + cmax * 0.04),
            ("sans-serif", 13),
        )
    }))
    .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
