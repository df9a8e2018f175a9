//! `experiment::report`: the machine line.
use super::cpu_line;

#[test]
fn cpu_line_names_model_family_and_vector_extensions() {
    let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\n\
                model name\t: AMD EPYC\nflags\t\t: fpu sse avx fma avx2 bmi2\n\n\
                processor\t: 1\nmodel name\t: other\n";
    assert_eq!(
        cpu_line(2, info),
        "2 cores, AMD EPYC, family 23 model 1, avx2/fma"
    );
    let intel =
        "model name\t: Xeon\ncpu family\t: 6\nmodel\t: 143\nflags\t: avx2 fma avx512f amx_tile\n";
    assert_eq!(
        cpu_line(4, intel),
        "4 cores, Xeon, family 6 model 143, avx2/fma/avx512f/amx_tile"
    );
    assert_eq!(
        cpu_line(2, "model name\t: old\nflags\t: sse2\n"),
        "2 cores, old, family ? model ?, no AVX2"
    );
    assert_eq!(cpu_line(8, ""), "8 cores");
}
