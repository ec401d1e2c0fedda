"""The tables tools/benchmark.py prints, one part of its result at a time (the measurements live in
pretrain/bench/ and transfer/bench/)."""
from pretrain.matchers import list_matchers


def print_table(result):
    if "step" in result:
        s = result["settings"]
        print(f"step: ResNet-{s['depth']}, {s['size']} px, batch {s['batch']}, {s['device']}"
              f"{', bf16' if s['amp'] else ''}")
        print("| variant | median s/step | min | max | images/s |\n|---|---|---|---|---|")
        for name, t in result["spread"].items():
            print(f"| {name} | {t['median']:.4f} | {t['min']:.4f} | {t['max']:.4f} | "
                  f"{result['images_per_s'][name]:.1f} |")
        for name, r in result["ratios"].items():
            print(f"{name}: {r:.4f}")
        for name, why in result["not_run"].items():
            print(f"{name}: not run ({why})")
        for name, b in result.get("peak_memory_bytes", {}).items():
            print(f"peak memory {name}: {b / 2 ** 30:.2f} GiB")
        if "largest_batch" in result:
            print(f"largest batch (hough): {result['largest_batch']['hough']}")
    if "numerics" in result:
        s = result["settings"]
        print(f"numerics: the {s['variant']} step, ResNet-{s['depth']}, {s['size']} px, batch {s['batch']}, "
              f"{s['device']}; CPU {result['cpu']['model']} ({result['cpu']['vendor']}, "
              f"{' '.join(result['cpu']['flags'])}), {result['cores']} cores")
        print("| mode | median s/step | min | max | threads |\n|---|---|---|---|---|")
        for mode, t in result["numerics"].items():
            print(f"| {mode} | {t['median']:.4f} | {t['min']:.4f} | {t['max']:.4f} | {result['threads'][mode]} |")
        print(f"portable/fast: {result['ratios']['portable/fast']:.3f}; a second portable process, the same steps: "
              f"{'bit-identical weights' if result['repeat_identical'] else 'DIFFERENT weights'}")
        for name, c in result.get("candidates", {}).items():
            print(f"{name}/fast: {result['ratios'][name + '/fast']:.3f}; "
                  f"{'the same weights as' if c['same_bits_as_portable'] else 'other weights than'} portable "
                  f"({c['why']})")
        for group in result.get("same_weights", []):
            print("the same weights: " + " = ".join(group))
    if "match" in result:
        print("| grid | matcher | median s | peak MiB |\n|---|---|---|---|")
        for grid, row in result["match"].items():
            for name in list_matchers(from_geometry=False):
                print(f"| {grid} | {name} | {row[name]['seconds']:.4f} | {row[name]['peak_bytes'] / 2 ** 20:.0f} |")
            for key in (k for k in row if k.startswith("ratio_")):
                print(f"| {grid} | {key[6:]} | {row[key]:.2f} | |")
            print(f"| {grid} | (a [N,Lq,Lk,slices] tensor would need) | | "
                  f"{row['bytes_of_N_Lq_Lk_slices_tensor'] / 2 ** 20:.0f} |")
    if "retrieval" in result:
        s, r = result["settings"], result["retrieval"]
        print(f"retrieval: ResNet-{s['depth']} C4 ({s['dim']} dimensions), {s['size']} px views, bank of "
              f"{s['bank_patches']:,} patches, k {s['neighbours']}, {s['threads']} threads")
        print(f"build: forward {r['build_forward_patches_per_s']:.0f} patches/s, faiss add "
              f"{r['build_add_patches_per_s']:.0f} patches/s; query: {r['query_patches_per_s']:.0f} patches/s")
    if "checks" in result:
        c = result["checks"]
        print(f"checks: {c['entries']:,} images checked (existence, header size) in {c['check_s']:.2f} s "
              f"({c['entries_per_s']:,.0f}/s; runs {c['check_spread_s'][0]:.2f}-{c['check_spread_s'][1]:.2f} s), "
              f"{c['check/decode']:.3f} of decoding every file once ({1000 * c['decode_s_per_file']:.2f} ms each)")
    if "decode" in result:
        rates = ", ".join(f"{k} {v:.0f}" for k, v in result["decode"]["images_per_s"].items())
        print(f"JPEG decoding, images/s ({result['decode']['images']} files): {rates}")
    if "data" in result:
        print("| workers | pipeline | images/s | per core |\n|---|---|---|---|")
        for key, row in result["data"].items():
            for name, ips in row["images_per_s"].items():
                print(f"| {key[8:]} | {name} | {ips:.1f} | {row['images_per_s_per_core'][name]:.1f} |")
            print(f"{key}: ours / plain {row['ratio_ours/plain']:.3f}, device workers / ours "
                  f"{row['ratio_device_workers/ours']:.2f}")
        for device, row in result.get("device_side", {}).items():
            print(f"device side on {device}: {1000 * row['seconds_per_image']:.2f} ms per image (both views)")
