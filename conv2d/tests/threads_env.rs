//! `CONV2D_NUM_THREADS` sets the default thread count (read once, at first use), and
//! `set_num_threads` overrides it. Alone in its own test binary, so nothing reads the
//! variable before it is set.

use conv2d::{conv2d, num_threads, set_num_threads, Conv2dOptions, NUM_THREADS_ENV};
use ndarray::Array4;

#[test]
fn environment_then_code_set_the_thread_count() {
    std::env::set_var(NUM_THREADS_ENV, "3");
    assert_eq!(num_threads(), 3);
    let x = Array4::<f32>::ones((2, 3, 9, 9));
    let w = Array4::<f32>::ones((4, 3, 3, 3));
    let with_three = conv2d(&x, &w, None, &Conv2dOptions::default()).unwrap();
    set_num_threads(1).unwrap();
    assert_eq!(num_threads(), 1);
    assert_eq!(
        conv2d(&x, &w, None, &Conv2dOptions::default()).unwrap(),
        with_three
    );
    std::env::set_var(NUM_THREADS_ENV, "5");
    assert_eq!(
        num_threads(),
        1,
        "the code's setting wins over the environment"
    );
}
