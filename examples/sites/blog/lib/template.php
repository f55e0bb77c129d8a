<?php
// Templates always come from the default theme.
function acme_template(string $name): string {
    return ACME_ROOT . '/themes/default/' . $name . '.php';
}

function acme_render(string $name, array $vars = []): void {
    acme_render_file(acme_template($name), $vars);
}

function acme_render_file(string $file, array $vars = []): void {
    extract($vars);
    $content = $file;
    require acme_template('layout');
}
