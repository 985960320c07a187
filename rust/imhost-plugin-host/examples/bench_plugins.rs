//! Plugin call overhead on a 512×512×16 float32 volume (scripts/bench-plugins.sh):
//! - in process, a model that reads one voxel and sets two scores (`test.echo`): the host's
//!   cost per call (checks, tensor description, callback table, output checks);
//! - a copy model (`test.copy`: output = input) in process and isolated, against one memory
//!   copy of the input plus one of the output into fresh buffers.

use std::time::Instant;

use imhost_core::registry::Registry;
use imhost_core::{Geometry, RunControl, Volume};
use imhost_plugin_host::testing::build_test_plugins;
use imhost_plugin_host::{Discovery, PluginConfig, load_plugins};
use ndarray::{Array4, ShapeBuilder};
use serde_json::Map;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = build_test_plugins(dir.path(), &["test_good"]).remove(0);
    let shape = [512usize, 512, 16, 1];
    let data = Array4::from_shape_fn(shape.f(), |(i, j, k, _)| (i + j + k) as f32);
    let x = Volume::from_parts(data, Geometry::identity(), None).expect("volume");
    let (none, ctl) = (Map::new(), RunControl::none());
    let bytes = shape.iter().product::<usize>() * 4;

    let mut inproc = Registry::new();
    load_plugins(&mut inproc, &Discovery::only(vec![plugin.clone()]), &PluginConfig::default(), false);
    let mut isolated = Registry::new();
    load_plugins(&mut isolated, &Discovery::only(vec![plugin]), &PluginConfig::default(), true);
    assert!(inproc.problems().is_empty() && isolated.problems().is_empty());

    let time = |f: &mut dyn FnMut(), n: usize| -> f64 {
        f();
        median(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let echo = time(
        &mut || {
            inproc.run("test.echo", &[x.view().into()], &none, &ctl).expect("echo");
        },
        2000,
    );
    let copy_in = time(
        &mut || {
            inproc.run("test.copy", &[x.view().into()], &none, &ctl).expect("copy");
        },
        30,
    );
    let copy_iso = time(
        &mut || {
            isolated.run("test.copy", &[x.view().into()], &none, &ctl).expect("copy");
        },
        30,
    );
    let src = x.data().as_slice_memory_order().expect("contiguous");
    let memcopies = time(
        &mut || {
            let a: Vec<f32> = src.to_vec();
            let b: Vec<f32> = a.clone();
            std::hint::black_box((a, b));
        },
        30,
    );
    println!("volume: 512x512x16 float32 ({:.1} MiB)", bytes as f64 / 1048576.0);
    println!("in-process call overhead (test.echo):        {:8.1} us", echo * 1e6);
    println!("copy model in process:                       {:8.2} ms", copy_in * 1e3);
    println!("copy model isolated (worker, memfds):        {:8.2} ms", copy_iso * 1e3);
    println!("one copy of input + one of output (memcpy):  {:8.2} ms", memcopies * 1e3);
    println!("isolated / (input + output copy):            {:8.2} x", copy_iso / memcopies);
}
