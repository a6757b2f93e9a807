//! Build script: the appliance binary is linked again when the function order it is linked
//! with changes. `scripts/link-ordered`, the x86_64 static musl linker, reads
//! `appliance/link-order.txt` (issue 16, the box's RSS), which cargo would not otherwise
//! track: a regenerated list, or a changed wrapper, left the last build's layout in place.
//! Naming them here also keeps cargo from running this script again for any other file.

fn main() {
    println!("cargo::rerun-if-changed=link-order.txt");
    println!("cargo::rerun-if-changed=../scripts/link-ordered");
}
