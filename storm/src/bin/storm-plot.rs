//! `storm-plot RESULTS PNG`: draws the storm bench's results file (JSON lines) as a PNG
//! (`storm::plot`); used by `scripts/bench storm`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, png] = args.as_slice() else {
        anyhow::bail!("usage: storm-plot RESULTS.jsonl OUT.png");
    };
    let text = std::fs::read_to_string(results)?;
    let points = storm::plot::read_results(&text);
    storm::plot::draw(&points, std::path::Path::new(png), true)?;
    println!("plot: {png} ({} runs)", points.len());
    Ok(())
}
