//! Data sets: images as bytes in host memory, read from IDX files (MNIST layout), from NumPy
//! `.npy` files ([`npy`], greyscale or colour) or drawn from the procedural [`sprites`] set.
//!
//! Every image set is a [`Dataset`]: `n` images of `channels x height x width` bytes (0..=255),
//! stored contiguously as `(n, channels, height, width)` row-major — each image is its channel
//! planes one after the other (CHW) — with optional class labels and optional generative
//! [`Factors`]. Greyscale sets (IDX, sprites) have one channel, colour sets three (R, G, B).
//! Loaders never panic on bad input: every problem is a [`DataError`] that names the file and the
//! field or value at fault.

pub mod folder;
pub mod idx;
pub mod npy;
pub mod sprites;

use std::path::{Path, PathBuf};

/// What went wrong while reading, writing or generating a data set.
///
/// Every variant that concerns a file carries its path (as given by the caller), and its message
/// names the header field or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused a read, write, rename or directory listing.
    /// (The OS error is part of the message, not a separate cause, so it is printed once.)
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// The file starts with the gzip magic bytes but does not decompress.
    #[error("{}: not a valid gzip stream: {detail}", path.display())]
    Gzip { path: PathBuf, detail: String },

    /// The file (or its decompressed content) is larger than the loader accepts.
    #[error("{}: {what} is larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        limit: u64,
    },

    /// Fewer bytes than the fixed-size IDX header needs.
    #[error(
        "{}: truncated header: {len} bytes, an IDX {kind} header needs {need} bytes",
        path.display()
    )]
    TruncatedHeader {
        path: PathBuf,
        kind: &'static str,
        len: usize,
        need: usize,
    },

    /// The header field `magic` is not the one the reader expects.
    #[error(
        "{}: header field `magic` is 0x{found:08x} ({found_desc}), expected 0x{expected:08x} ({expected_desc})",
        path.display()
    )]
    Magic {
        path: PathBuf,
        found: u32,
        found_desc: String,
        expected: u32,
        expected_desc: &'static str,
    },

    /// A header dimension is zero.
    #[error("{}: header field `{field}` is 0; every dimension must be at least 1", path.display())]
    ZeroDimension { path: PathBuf, field: &'static str },

    /// The payload is shorter than the header declares.
    #[error(
        "{}: truncated: header says {declared} ({need} bytes) but only {have} bytes follow",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        /// e.g. "6000 images of 28x28" or "6000 labels".
        declared: String,
        need: u128,
        have: u128,
    },

    /// The payload is longer than the header declares.
    #[error("{}: {} after the last {item}", path.display(), describe_trailing(.extra))]
    Trailing {
        path: PathBuf,
        /// How many bytes follow, when known without reading them (a plain file); `None` for
        /// gzip content, which is not decompressed past the first extra byte.
        extra: Option<u64>,
        item: &'static str,
    },

    /// The header declares a payload larger than the loader accepts or this host can hold;
    /// nothing is read past the header.
    #[error(
        "{}: header says {declared} ({need} bytes), more than {limit_desc} ({limit} bytes)",
        path.display()
    )]
    PayloadTooLarge {
        path: PathBuf,
        /// e.g. "6000 images of 28x28" or "6000 labels".
        declared: String,
        need: u128,
        limit: u64,
        /// e.g. "the loader's limit" or "the memory available on this host".
        limit_desc: &'static str,
    },

    /// A data directory lacks a required file.
    #[error("{}: no {file}[.gz] file", dir.display())]
    MissingFile { dir: PathBuf, file: &'static str },

    /// An image file and its label file disagree on the number of items.
    #[error(
        "{}: {n_images} images but {}: {n_labels} labels; the counts must match",
        images.display(),
        labels.display()
    )]
    LabelCount {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },

    /// A writer was handed arguments that do not describe a valid IDX file.
    #[error("{}: cannot write: {detail}", path.display())]
    InvalidArgument { path: PathBuf, detail: String },

    /// A `.npy` file's header or content is not one the reader accepts; `field` is the header
    /// field (`magic`, `version`, `header length`, `header`, `descr`, `fortran_order`, `shape`)
    /// or `data` for an element's value.
    #[error("{}: .npy `{field}`: {detail}", path.display())]
    Npy {
        path: PathBuf,
        field: &'static str,
        detail: String,
    },

    /// The training and test images of a directory have different sizes.
    #[error(
        "{}: images of {train_shape} but {}: images of {test_shape}; the training and test \
         images must have the same size",
        train.display(),
        test.display()
    )]
    ShapeMismatch {
        train: PathBuf,
        train_shape: String,
        test: PathBuf,
        test_shape: String,
    },

    /// A data directory holds neither an IDX nor a `.npy` data set.
    #[error(
        "{}: no data set: expected {TRAIN_IMAGES}[.gz] and {TEST_IMAGES}[.gz] (IDX) or \
         {NPY_TRAIN_IMAGES} and {NPY_TEST_IMAGES} (NumPy), or PNG/JPEG images (directly, in \
         class folders, or in train/ and test/)",
        dir.display()
    )]
    NoDataSet { dir: PathBuf },

    /// A NumPy data directory lacks a required file.
    #[error("{}: no {file} file", dir.display())]
    MissingNpyFile { dir: PathBuf, file: &'static str },

    /// A folder of images (or a file in it) that cannot be read as a data set ([`folder`]).
    #[error("{}: {detail}", path.display())]
    Folder { path: PathBuf, detail: String },

    /// A generator configuration cannot be satisfied.
    #[error("{name}: {detail}")]
    Config { name: &'static str, detail: String },
}

fn describe_trailing(extra: &Option<u64>) -> String {
    match extra {
        Some(n) => format!("{n} trailing bytes"),
        None => "trailing bytes (the decompressed content goes on past the size the header \
                 declares)"
            .to_string(),
    }
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            err: source,
        }
    }
}

/// Generative factors of a synthetic data set (one row per image).
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    /// Factor names, e.g. `["shape", "scale", "orientation", "pos_x", "pos_y"]`.
    pub names: Vec<String>,
    /// Number of discrete values each factor takes.
    pub sizes: Vec<usize>,
    /// Actual factor values: `(n, n_factors)` row-major.
    pub values: Vec<f32>,
    /// Discrete index of each factor value, `0..sizes[f]`: `(n, n_factors)` row-major.
    pub classes: Vec<u32>,
}

impl Factors {
    /// Number of factors (columns of `values` and `classes`).
    pub fn n_factors(&self) -> usize {
        self.names.len()
    }

    /// Factor values of image `i`: `(n_factors,)`.
    pub fn values_of(&self, i: usize) -> &[f32] {
        let k = self.n_factors();
        &self.values[i * k..(i + 1) * k]
    }

    /// Discrete factor indices of image `i`: `(n_factors,)`.
    pub fn classes_of(&self, i: usize) -> &[u32] {
        let k = self.n_factors();
        &self.classes[i * k..(i + 1) * k]
    }

    /// The rows `indices` (in that order).
    ///
    /// # Panics
    /// If an index is `>=` the number of rows.
    pub fn subset(&self, indices: &[usize]) -> Factors {
        let k = self.n_factors();
        let mut values = Vec::with_capacity(indices.len() * k);
        let mut classes = Vec::with_capacity(indices.len() * k);
        for &i in indices {
            values.extend_from_slice(self.values_of(i));
            classes.extend_from_slice(self.classes_of(i));
        }
        Factors {
            names: self.names.clone(),
            sizes: self.sizes.clone(),
            values,
            classes,
        }
    }
}

/// `n` images of `channels x height x width` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Short name used in logs and run directories, e.g. `"mnist-8k"` or `"sprites"`.
    pub name: String,
    /// Number of images.
    pub n: usize,
    /// Colour channels per pixel: 1 (grey) or 3 (R, G, B).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `(n, channels, height, width)` row-major levels, 0 = black, 255 = full intensity: each
    /// image is its `channels` planes of `(height, width)` one after the other (CHW).
    pub pixels: Vec<u8>,
    /// `(n,)` class labels, if the set has them.
    pub labels: Option<Vec<u8>>,
    /// `(n, n_factors)` generative factors, for synthetic sets.
    pub factors: Option<Factors>,
}

impl Dataset {
    /// Bytes per image: `channels * height * width`.
    ///
    /// The loaders check with checked arithmetic that this product (times `n`) fits before they
    /// build a data set; [`Dataset::check`] does the same for a hand-built one.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The size of one image, for the PNG writers ([`crate::image::save_grid_png_chw`]).
    pub fn shape(&self) -> crate::image::ImageShape {
        crate::image::ImageShape {
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    /// Checks that the fields agree: `channels`, `height` and `width` at least 1, `pixels`
    /// holding exactly `n·channels·height·width` bytes (computed with checked arithmetic), and
    /// labels and factors with one row per image. The error ([`DataError::Config`]) names the
    /// set and the field at fault.
    pub fn check(&self) -> Result<(), DataError> {
        let bad = |detail: String| DataError::Config {
            name: "data set",
            detail: format!("`{}`: {detail}", self.name),
        };
        for (field, v) in [
            ("channels", self.channels),
            ("height", self.height),
            ("width", self.width),
        ] {
            if v == 0 {
                return Err(bad(format!("`{field}` is 0; it must be at least 1")));
            }
        }
        let need = self
            .channels
            .checked_mul(self.height)
            .and_then(|v| v.checked_mul(self.width))
            .and_then(|v| v.checked_mul(self.n));
        if need != Some(self.pixels.len()) {
            return Err(bad(format!(
                "`pixels` holds {} bytes but {} images of {}x{}x{} need {}",
                self.pixels.len(),
                self.n,
                self.channels,
                self.height,
                self.width,
                need.map_or_else(|| "more than usize::MAX".to_string(), |v| v.to_string())
            )));
        }
        if let Some(l) = &self.labels
            && l.len() != self.n
        {
            return Err(bad(format!("{} labels for {} images", l.len(), self.n)));
        }
        if let Some(f) = &self.factors {
            let k = f.n_factors();
            let rows = self.n.checked_mul(k);
            if f.sizes.len() != k || rows != Some(f.values.len()) || rows != Some(f.classes.len()) {
                return Err(bad(format!(
                    "factors: {} names, {} sizes, {} values and {} classes for {} images",
                    k,
                    f.sizes.len(),
                    f.values.len(),
                    f.classes.len(),
                    self.n
                )));
            }
        }
        Ok(())
    }

    /// Image `i`: `(channels, height, width)` row-major bytes.
    ///
    /// # Panics
    /// If `i >= n`.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[i * len..(i + 1) * len]
    }

    /// Image `i` as `(channels, height, width)` row-major floats in `[0, 1]` (`v / 255`): the
    /// values the GPU gather writes for it.
    ///
    /// # Panics
    /// If `i >= n`.
    pub fn to_f32(&self, i: usize) -> Vec<f32> {
        self.image(i)
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect()
    }

    /// A new data set holding the images `indices` (in that order, repeats allowed), with their
    /// labels and factors. The name is kept.
    ///
    /// # Panics
    /// If an index is `>= n`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        let factors = self.factors.as_ref().map(|f| f.subset(indices));
        Dataset {
            name: self.name.clone(),
            n: indices.len(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels,
            labels,
            factors,
        }
    }
}

/// A training set and a held-out test set (the same image size when the loader says so: see
/// [`load_idx_dir`] and [`load_npy_dir`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
    /// The name of each label, label i at index i, where the source names them (an image
    /// folder's class folders); empty otherwise.
    pub classes: Vec<String>,
}

/// File names of the standard MNIST layout (also used by Fashion-MNIST and KMNIST).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// File names of a NumPy data directory (see [`load_npy_dir`]).
pub const NPY_TRAIN_IMAGES: &str = "train-images.npy";
pub const NPY_TRAIN_LABELS: &str = "train-labels.npy";
pub const NPY_TEST_IMAGES: &str = "test-images.npy";
pub const NPY_TEST_LABELS: &str = "test-labels.npy";

/// `dir/name` if it exists, else `dir/name.gz` if that exists, else `None`.
///
/// The uncompressed file wins when both exist (it reads faster). Whether a file is gzip is decided
/// by its magic bytes, not by this name.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Some(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// Reads one split (`images` required, `labels` optional) of an IDX directory.
fn load_split(
    dir: &Path,
    name: &str,
    images: &'static str,
    labels: &'static str,
) -> Result<Dataset, DataError> {
    let images_path = find_file(dir, images).ok_or_else(|| DataError::MissingFile {
        dir: dir.to_path_buf(),
        file: images,
    })?;
    let idx::IdxImages {
        n,
        rows: height,
        cols: width,
        pixels,
    } = idx::read_idx_images(&images_path)?;
    let labels = match find_file(dir, labels) {
        None => None,
        Some(labels_path) => {
            let labels = idx::read_idx_labels(&labels_path)?;
            if labels.len() != n {
                return Err(DataError::LabelCount {
                    images: images_path,
                    n_images: n,
                    labels: labels_path,
                    n_labels: labels.len(),
                });
            }
            Some(labels)
        }
    };
    Ok(Dataset {
        name: name.to_string(),
        n,
        channels: 1,
        height,
        width,
        pixels,
        labels,
        factors: None,
    })
}

/// Loads a directory in the MNIST layout: `train-images-idx3-ubyte` and `t10k-images-idx3-ubyte`
/// (each plain or `.gz`, required) and `train-labels-idx1-ubyte` / `t10k-labels-idx1-ubyte`
/// (optional; when present, their count must match the images').
///
/// Both splits are named after the directory's last component (e.g. `"mnist-8k"`). The train and
/// test images may have different sizes only if the files say so; callers that need equal sizes
/// must check.
pub fn load_idx_dir(dir: &Path) -> Result<Split, DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory (expected a folder holding train-images-idx3-ubyte[.gz])",
            ),
        ));
    }
    let name = dir_name(dir);
    let train = load_split(dir, &name, TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = load_split(dir, &name, TEST_IMAGES, TEST_LABELS)?;
    Ok(Split {
        train,
        test,
        classes: Vec::new(),
    })
}

/// Reads one split (`images` required, `labels` optional) of a NumPy directory.
fn load_npy_split(
    dir: &Path,
    name: &str,
    images: &'static str,
    labels: &'static str,
) -> Result<Dataset, DataError> {
    let images_path = dir.join(images);
    if !images_path.is_file() {
        return Err(DataError::MissingNpyFile {
            dir: dir.to_path_buf(),
            file: images,
        });
    }
    let npy::NpyImages {
        n,
        channels,
        height,
        width,
        pixels,
    } = npy::read_npy_images(&images_path)?;
    let labels_path = dir.join(labels);
    let labels = if labels_path.is_file() {
        let labels = npy::read_npy_labels(&labels_path)?;
        if labels.len() != n {
            return Err(DataError::LabelCount {
                images: images_path,
                n_images: n,
                labels: labels_path,
                n_labels: labels.len(),
            });
        }
        Some(labels)
    } else {
        None
    };
    Ok(Dataset {
        name: name.to_string(),
        n,
        channels,
        height,
        width,
        pixels,
        labels,
        factors: None,
    })
}

/// Errors unless `dir` is a directory.
fn check_dir(dir: &Path, expect: &str) -> Result<(), DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("not a directory (expected a folder holding {expect})"),
            ),
        ));
    }
    Ok(())
}

/// Loads a NumPy data directory: `train-images.npy` and `test-images.npy` (required) and
/// `train-labels.npy` / `test-labels.npy` (optional; when present, their count must match the
/// images'). See [`npy`] for the accepted types and shapes: `(N, H, W)` greyscale, or
/// `(N, C, H, W)` / `(N, H, W, C)` with one or three channels, as bytes or floats in `[0, 1]`.
///
/// Both splits are named after the directory's last component. Unlike [`load_idx_dir`], the
/// training and test images must have the same size ([`DataError::ShapeMismatch`]).
pub fn load_npy_dir(dir: &Path) -> Result<Split, DataError> {
    check_dir(dir, NPY_TRAIN_IMAGES)?;
    let name = dir_name(dir);
    let train = load_npy_split(dir, &name, NPY_TRAIN_IMAGES, NPY_TRAIN_LABELS)?;
    let test = load_npy_split(dir, &name, NPY_TEST_IMAGES, NPY_TEST_LABELS)?;
    if train.shape() != test.shape() {
        return Err(DataError::ShapeMismatch {
            train: dir.join(NPY_TRAIN_IMAGES),
            train_shape: train.shape().to_string(),
            test: dir.join(NPY_TEST_IMAGES),
            test_shape: test.shape().to_string(),
        });
    }
    Ok(Split {
        train,
        test,
        classes: Vec::new(),
    })
}

/// Loads a data directory of either layout: NumPy ([`load_npy_dir`]) when it holds
/// `train-images.npy` or `test-images.npy`, else IDX ([`load_idx_dir`]) when it holds
/// `train-images-idx3-ubyte[.gz]` or `t10k-images-idx3-ubyte[.gz]`, else a folder of PNG and
/// JPEG images ([`folder::load_folder`]) when it holds `train/` or `test/` or image files (directly
/// or in subfolders); otherwise [`DataError::NoDataSet`] naming the layouts.
pub fn load_dir(dir: &Path) -> Result<Split, DataError> {
    check_dir(dir, &format!("{TRAIN_IMAGES}[.gz] or {NPY_TRAIN_IMAGES}"))?;
    if dir.join(NPY_TRAIN_IMAGES).is_file() || dir.join(NPY_TEST_IMAGES).is_file() {
        load_npy_dir(dir)
    } else if find_file(dir, TRAIN_IMAGES).is_some() || find_file(dir, TEST_IMAGES).is_some() {
        load_idx_dir(dir)
    } else if folder::is_image_folder(dir)? {
        Ok(folder::load_folder(dir)?.split)
    } else {
        Err(DataError::NoDataSet {
            dir: dir.to_path_buf(),
        })
    }
}

/// Loads a single image file without labels: a `.npy` file ([`npy::read_npy_images`]) if it
/// starts with the `.npy` magic bytes, else an IDX file, plain or gzip
/// ([`load_idx_images_file`]). The data set is named after the file, without a trailing `.gz`
/// or `.npy`.
pub fn load_images_file(path: &Path) -> Result<Dataset, DataError> {
    let mut magic = [0u8; 6];
    let got = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut got = 0;
        loop {
            match f.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(k) => {
                    got += k;
                    if got == magic.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::io(path, e)),
            }
        }
        got
    };
    if magic[..got] != npy::MAGIC[..] {
        return load_idx_images_file(path);
    }
    let npy::NpyImages {
        n,
        channels,
        height,
        width,
        pixels,
    } = npy::read_npy_images(path)?;
    let file = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".to_string());
    let name = file.strip_suffix(".npy").unwrap_or(&file).to_string();
    Ok(Dataset {
        name,
        n,
        channels,
        height,
        width,
        pixels,
        labels: None,
        factors: None,
    })
}

/// Loads a single IDX image file (plain or gzip) without labels. The data set is named after the
/// file, without a trailing `.gz`.
pub fn load_idx_images_file(path: &Path) -> Result<Dataset, DataError> {
    let idx::IdxImages {
        n,
        rows: height,
        cols: width,
        pixels,
    } = idx::read_idx_images(path)?;
    let file = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".to_string());
    let name = file.strip_suffix(".gz").unwrap_or(&file).to_string();
    Ok(Dataset {
        name,
        n,
        channels: 1,
        height,
        width,
        pixels,
        labels: None,
        factors: None,
    })
}

/// Last component of a directory path, resolving `.`/`..`/trailing slashes where possible.
fn dir_name(dir: &Path) -> String {
    let from = |p: &Path| p.file_name().map(|s| s.to_string_lossy().into_owned());
    from(dir)
        .or_else(|| std::fs::canonicalize(dir).ok().and_then(|p| from(&p)))
        .unwrap_or_else(|| "data".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset {
            name: "toy".into(),
            n: 3,
            channels: 1,
            height: 1,
            width: 2,
            pixels: vec![0, 255, 10, 20, 30, 40],
            labels: Some(vec![7, 8, 9]),
            factors: Some(Factors {
                names: vec!["a".into()],
                sizes: vec![3],
                values: vec![0.0, 0.5, 1.0],
                classes: vec![0, 1, 2],
            }),
        }
    }

    #[test]
    fn subset_keeps_labels_and_factors() {
        let d = toy();
        let s = d.subset(&[2, 0]);
        assert_eq!(s.n, 2);
        assert_eq!(s.pixels, vec![30, 40, 0, 255]);
        assert_eq!(s.labels, Some(vec![9, 7]));
        let f = s.factors.unwrap();
        assert_eq!(f.values, vec![1.0, 0.0]);
        assert_eq!(f.classes, vec![2, 0]);
    }

    #[test]
    fn colour_images_are_channel_planes() {
        // Two 3x1x2 images: image i, channel c, pixel p holds 10·i + 3·c + p.
        let pixels: Vec<u8> = (0..2)
            .flat_map(|i| (0..3).flat_map(move |c| (0..2).map(move |p| 10 * i + 3 * c + p)))
            .collect();
        let d = Dataset {
            name: "rgb".into(),
            n: 2,
            channels: 3,
            height: 1,
            width: 2,
            pixels,
            labels: None,
            factors: None,
        };
        d.check().unwrap();
        assert_eq!(d.image_len(), 6);
        assert_eq!(d.image(1), &[10, 11, 13, 14, 16, 17]);
        assert_eq!(d.to_f32(0)[4], 6.0 / 255.0);
        let s = d.subset(&[1]);
        assert_eq!((s.n, s.channels), (1, 3));
        assert_eq!(s.pixels, d.image(1));
        assert_eq!(s.shape().to_string(), "3x1x2");
    }

    #[test]
    fn to_f32_scales_to_unit_interval() {
        let d = toy();
        assert_eq!(d.to_f32(0), vec![0.0, 1.0]);
        assert_eq!(d.image_len(), 2);
        assert_eq!(d.image(1), &[10, 20]);
    }
}
