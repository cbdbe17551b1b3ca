//! Writes every CUDA kernel family as a cubin for the given compute capabilities into a folder,
//! for machines without NVRTC (the engine loads them from the folder named by
//! `SEQREC_CUDA_KERNELS`):
//!
//! ```text
//! cargo run -p seqrec-kernels --features cuda --example cuda-cubins -- DIR 80 90 100
//! ```

use seqrec_kernels::cuda::{self, Target};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: cuda-cubins DIR CC... (e.g. DIR 80 90)");
        std::process::exit(2);
    };
    let ccs: Vec<u32> = args
        .map(|a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("`{a}` is not a compute capability such as 90");
                std::process::exit(2)
            })
        })
        .collect();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{dir}: {e}");
        std::process::exit(1);
    }
    for &cc in &ccs {
        for (family, _) in cuda::SOURCES {
            match cuda::compile(family, Target::Cubin(cc)) {
                Ok(image) => {
                    let path = std::path::Path::new(&dir).join(cuda::cubin_name(family, cc));
                    if let Err(e) = std::fs::write(&path, image) {
                        eprintln!("{}: {e}", path.display());
                        std::process::exit(1);
                    }
                    println!("{}", path.display());
                }
                Err(e) => {
                    eprintln!("{family} for sm_{cc}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
